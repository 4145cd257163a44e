-- The revocation log is appended by the store, not by a trigger on sessions
-- (docs/design.md, "The revocation feed"): Citus refuses triggers on a distributed
-- table, and a shard's trigger would run on a worker, far from the log and from the
-- feed's listeners. Every statement that ends sessions is followed, in its
-- transaction, by one call of revocation_log_append_endings with what it ended
-- (store/revocations.py's append_revocations), run on the coordinator as a statement
-- of its own.
--
-- A replica of the previous release still relies on the trigger: its endings during a
-- rolling upgrade across this migration are not logged (the feed misses them; their
-- access tokens live out their short expiry). Upgrade with all replicas stopped, or
-- accept that window.
DROP TRIGGER sessions_append_revocation ON sessions;
DROP FUNCTION revocation_log_append();

-- The trigger's guarantees, kept: expiries stay off the feed (migration 0019), each
-- ending is appended once (the caller passes only the rows its UPDATE ended, which
-- requires revoked_at IS NULL), and cursor order is commit order, because the ids are
-- drawn under the advisory lock held until commit (migration 0014). The rows of one
-- call get ascending ids in (revoked_at, session_id) order, whatever order the caller
-- passes them in. One notice per call, with the last id, only if it appended any.
CREATE FUNCTION revocation_log_append_endings(
    session_ids uuid[], user_ids uuid[], reasons text[], revoked_ats timestamptz[]
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ending record;
    appended bigint;
BEGIN
    FOR ending IN
        SELECT e.session_id, e.user_id, e.reason, e.revoked_at
        FROM unnest(session_ids, user_ids, reasons, revoked_ats)
            AS e (session_id, user_id, reason, revoked_at)
        WHERE e.reason NOT IN ('idle_timeout', 'absolute_timeout')
        ORDER BY e.revoked_at, e.session_id
    LOOP
        IF appended IS NULL THEN
            -- 0x617574680014: "auth" and migration 0014's number, as the trigger took.
            PERFORM pg_advisory_xact_lock(107157092040724);
        END IF;
        INSERT INTO revocation_log (id, session_id, user_id, reason, revoked_at)
        VALUES (nextval('revocation_log_id_seq'), ending.session_id, ending.user_id,
                ending.reason, ending.revoked_at)
        RETURNING id INTO appended;
    END LOOP;
    IF appended IS NOT NULL THEN
        -- Delivered at commit; a listener reads the log after its cursor on any notice.
        PERFORM pg_notify('authsvc_revocations', appended::text);
    END IF;
    RETURN appended;
END;
$$;
