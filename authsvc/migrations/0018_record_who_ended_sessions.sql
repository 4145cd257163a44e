-- Session tombstones (docs/operations.md, "Why was I signed out?"): an ended
-- session keeps its row, with when (revoked_at), why (end_reason) and who ended it,
-- until AUTHSVC_ENDED_SESSION_RETENTION has passed.
--
-- The endings issue 14 adds, in the feed's words (SessionEndReason of
-- auth_service.proto, lower case): the sweeper marks an expired session ended
-- at its idle or absolute deadline; AdminService.RevokeSessions ends sessions
-- by filter; a login past the per-user session limit evicts the least recently
-- active one.
ALTER TABLE sessions
    DROP CONSTRAINT sessions_end_reason_known,
    ADD CONSTRAINT sessions_end_reason_known CHECK (end_reason IN (
        'user_logout', 'user_revoked', 'refresh_token_reuse',
        'admin_revoked', 'user_disabled', 'password_changed', 'password_reset',
        'user_deleted', 'idle_timeout', 'absolute_timeout', 'bulk_revoked',
        'session_limit_evicted'));

-- Who ended it: the user (from the session of the call, when it had one), an
-- operator (by its credential's name, as in the audit trail), or the system.
-- NULL on sessions ended before this migration, and while live.
ALTER TABLE sessions
    ADD COLUMN ended_by_kind     text
        CONSTRAINT sessions_ended_by_kind_known
        CHECK (ended_by_kind IN ('user', 'operator', 'system')),
    ADD COLUMN ended_by_session  uuid,
    ADD COLUMN ended_by_operator text;
