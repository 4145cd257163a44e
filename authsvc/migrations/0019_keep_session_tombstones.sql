-- Session tombstones (docs/design.md, "Session tombstones"): the sweeper no longer
-- deletes an expired session; it marks it ended at the deadline that passed
-- (end_reason idle_timeout or absolute_timeout, ended_by_kind 'system'), and deletes
-- every ended session once AUTHSVC_ENDED_SESSION_RETENTION has passed since it ended.
-- Its two session scans use indexes that exist already: the marking the partial index
-- on idle_expires_at of unrevoked sessions (0005), the deletion the one on revoked_at
-- (0002).

-- Expiries stay off the revocation feed. The feed tells offline verifiers to deny a
-- session's access tokens before they expire; an expired session has none left to deny
-- (every access token's exp is capped at its session's idle deadline), and the sweeper
-- marks expiries in batches long after the deadline, so feeding them would only flood
-- every subscriber and liveness cache with entries that mean nothing. The WHEN reads
-- end_reason through COALESCE: a replica of the previous release sets none, and its
-- endings are never expiries.
DROP TRIGGER sessions_append_revocation ON sessions;
CREATE TRIGGER sessions_append_revocation
    AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (
        OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
        AND COALESCE(NEW.end_reason, '') NOT IN ('idle_timeout', 'absolute_timeout'))
    EXECUTE FUNCTION revocation_log_append();

-- The sweeper deletes only rotated tokens past their expiry: a session's current token
-- stays with its tombstone (so Refresh answers with the session's end reason) and goes
-- with it. refresh_tokens_expires_at_idx (0003) is what a previous release's sweeper
-- reads during a rolling upgrade; drop it in a later migration.
CREATE INDEX refresh_tokens_rotated_expires_at_idx ON refresh_tokens (expires_at)
    WHERE rotated_at IS NOT NULL;
