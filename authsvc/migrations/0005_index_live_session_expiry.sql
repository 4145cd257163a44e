-- The sweeper's expired-session query skips revoked sessions (they wait for
-- the revoked retention), so its index only needs the unrevoked rows.
DROP INDEX sessions_idle_expires_at_idx;
CREATE INDEX sessions_live_idle_expires_at_idx ON sessions (idle_expires_at)
    WHERE revoked_at IS NULL;
