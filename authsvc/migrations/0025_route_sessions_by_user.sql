-- Routing keys (docs/scaling.md; issue 17): sessions, refresh tokens and refresh lineage
-- are keyed by their user first, so that on Citus, distributed on user_id and co-located,
-- every hot statement names one shard. On plain PostgreSQL the keys only widen.
--
-- Refresh tokens and lineage carry their session's user. Backfilled in one UPDATE each,
-- not in batches: it rewrites both tables once under this migration's lock, which a
-- deployment of this size takes in seconds; the ALTERs below lock the tables anyway.
ALTER TABLE refresh_tokens ADD COLUMN user_id uuid;
UPDATE refresh_tokens t SET user_id = s.user_id FROM sessions s WHERE s.id = t.session_id;
ALTER TABLE refresh_tokens ALTER COLUMN user_id SET NOT NULL;

ALTER TABLE refresh_lineage ADD COLUMN user_id uuid;
UPDATE refresh_lineage l SET user_id = s.user_id FROM sessions s WHERE s.id = l.session_id;
ALTER TABLE refresh_lineage ALTER COLUMN user_id SET NOT NULL;

-- The foreign keys on sessions (id) go before the key they reference.
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_session_id_fkey;
ALTER TABLE refresh_lineage DROP CONSTRAINT refresh_lineage_session_id_fkey;

ALTER TABLE sessions DROP CONSTRAINT sessions_pkey;
ALTER TABLE sessions ADD CONSTRAINT sessions_pkey PRIMARY KEY (user_id, id);
-- Lookups by session id alone (AdminService, the sweeper's and bulk revocation's batches
-- by id, an access token's session on the admin paths): not unique, since on Citus a
-- unique index must hold the distribution column; the primary key keeps ids unique.
CREATE INDEX sessions_id_idx ON sessions (id);

-- A token is found by its hash: with the routing prefix, on its user's shard; a legacy
-- token (issued before this migration) by its hash alone, which token_hash leading
-- still serves.
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_pkey;
ALTER TABLE refresh_tokens ADD CONSTRAINT refresh_tokens_pkey PRIMARY KEY (user_id, id);
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_token_hash_key;
ALTER TABLE refresh_tokens ADD CONSTRAINT refresh_tokens_token_hash_user_id_key
    UNIQUE (token_hash, user_id);
ALTER TABLE refresh_tokens ADD CONSTRAINT refresh_tokens_session_fkey
    FOREIGN KEY (user_id, session_id) REFERENCES sessions (user_id, id) ON DELETE CASCADE;

-- Still the lineage's one index: one session's history in order, now under its user.
ALTER TABLE refresh_lineage DROP CONSTRAINT refresh_lineage_pkey;
ALTER TABLE refresh_lineage ADD CONSTRAINT refresh_lineage_pkey
    PRIMARY KEY (user_id, session_id, id);
ALTER TABLE refresh_lineage ADD CONSTRAINT refresh_lineage_session_fkey
    FOREIGN KEY (user_id, session_id) REFERENCES sessions (user_id, id) ON DELETE CASCADE;

-- During a rolling upgrade a replica of the previous release inserts tokens (legacy ones,
-- without a prefix) and lineage steps without user_id: each takes its session's. This
-- release always sets it, so the WHEN is all it costs. Citus refuses triggers on
-- distributed tables: the distribution migration drops these two with the others.
CREATE FUNCTION user_id_from_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT s.user_id INTO NEW.user_id FROM sessions s WHERE s.id = NEW.session_id;
    RETURN NEW;
END;
$$;

CREATE TRIGGER refresh_tokens_user_id_from_session
    BEFORE INSERT ON refresh_tokens
    FOR EACH ROW WHEN (NEW.user_id IS NULL)
    EXECUTE FUNCTION user_id_from_session();

CREATE TRIGGER refresh_lineage_user_id_from_session
    BEFORE INSERT ON refresh_lineage
    FOR EACH ROW WHEN (NEW.user_id IS NULL)
    EXECUTE FUNCTION user_id_from_session();
