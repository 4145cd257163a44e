-- The revocation log: one row per session ending, its id the feed's cursor
-- (docs/design.md, "The revocation feed"). Rows are appended by a trigger on
-- sessions, in the ending's own transaction, so every ending is logged by
-- construction, whichever statement ends it. A later way of ending a session
-- sets revoked_at and end_reason like the others (add its reason below), or
-- it is not an ending the feed can see: deleting a live session is not.

-- Why a session ended, in the feed's words (revoke_reason keeps the free text).
-- NULL on rows revoked before this migration.
ALTER TABLE sessions ADD COLUMN end_reason text
    CONSTRAINT sessions_end_reason_known
    CHECK (end_reason IN ('user_logout', 'user_revoked', 'refresh_token_reuse'));

-- No foreign keys: the log outlives the sessions it names (the sweeper may
-- delete a session before its entry, or after).
CREATE TABLE revocation_log (
    id         bigint      PRIMARY KEY,
    session_id uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    reason     text        NOT NULL,
    revoked_at timestamptz NOT NULL
);

CREATE SEQUENCE revocation_log_id_seq AS bigint OWNED BY revocation_log.id;

-- The snapshot (sessions ended since an instant) and the sweeper.
CREATE INDEX revocation_log_revoked_at_idx ON revocation_log (revoked_at);

-- The highest id the sweeper has deleted: a reader whose cursor is below it may
-- have missed rows, which ids with gaps cannot show. At most one row.
CREATE TABLE revocation_log_swept (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    through  bigint  NOT NULL
);

-- Cursor order is commit order: the lock is taken before the id is drawn and held
-- until commit, which makes the row visible before the next appender can draw,
-- so a reader that has seen id N never later finds a smaller one. (With a plain
-- sequence a transaction holding 104 may commit after one holding 105, and a
-- reader at 105 would skip 104 for ever.) Endings serialise on this lock from
-- their ending statement to their commit.
CREATE FUNCTION revocation_log_append() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    appended bigint;
BEGIN
    -- 0x617574680014: "auth" and this migration's number.
    PERFORM pg_advisory_xact_lock(107157092040724);
    INSERT INTO revocation_log (id, session_id, user_id, reason, revoked_at)
    VALUES (
        nextval('revocation_log_id_seq'), NEW.id, NEW.user_id,
        -- A replica of the previous version (a rolling upgrade) sets no end_reason:
        -- its revoke_reason says which ending it was.
        COALESCE(NEW.end_reason, CASE
            WHEN NEW.revoke_reason LIKE 'logout%' THEN 'user_logout'
            WHEN NEW.revoke_reason = 'refresh_token_reused' THEN 'refresh_token_reuse'
            ELSE 'user_revoked' END),
        NEW.revoked_at)
    RETURNING id INTO appended;
    -- Delivered at commit; a listener reads the log after its cursor on any notice.
    PERFORM pg_notify('authsvc_revocations', appended::text);
    RETURN NULL;
END;
$$;

-- A row trigger with a WHEN clause rather than a statement trigger with
-- transition tables: those cannot take a column list, so every UPDATE of sessions
-- (each Refresh slides one) would materialise them; this one costs a rotation nothing.
CREATE TRIGGER sessions_append_revocation
    AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION revocation_log_append();

CREATE FUNCTION revocation_log_record_sweep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO revocation_log_swept (only_row, through)
    SELECT true, max(id) FROM swept_rows HAVING count(*) > 0
    ON CONFLICT (only_row) DO UPDATE
        SET through = GREATEST(revocation_log_swept.through, EXCLUDED.through);
    RETURN NULL;
END;
$$;

-- Any delete from the log records how far it reached, by construction.
CREATE TRIGGER revocation_log_swept_through
    AFTER DELETE ON revocation_log
    REFERENCING OLD TABLE AS swept_rows
    FOR EACH STATEMENT EXECUTE FUNCTION revocation_log_record_sweep();
