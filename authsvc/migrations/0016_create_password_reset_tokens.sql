-- Password-reset tokens (AdminService.CreatePasswordResetToken, AuthService.ResetPassword),
-- stored as SHA-256 like refresh tokens, never raw. A token is good until expires_at and
-- only once: ResetPassword deletes every token of the user it resets, so a used token and
-- its siblings are simply gone. They go with the account (DeleteUser).
CREATE TABLE password_reset_tokens (
    token_hash bytea       PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- ResetPassword spends all of a user's tokens; the sweeper deletes expired ones.
CREATE INDEX password_reset_tokens_user_id_idx ON password_reset_tokens (user_id);
CREATE INDEX password_reset_tokens_expires_at_idx ON password_reset_tokens (expires_at);

-- DeleteUser erases a deleted account's personal data from the audit trail too (the
-- addresses, user agents and free-text notes of its events) while the rows keep their
-- ids, types and times. The one update audit_events now takes is exactly that: on an
-- event of a user who no longer exists, blank the address and the user agent and drop
-- detail keys, changing nothing else. Anything else is still refused, so the trail
-- stays append-only for every account that exists.
CREATE OR REPLACE FUNCTION audit_events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.user_id IS NOT NULL
        AND NOT EXISTS (SELECT FROM users WHERE id = OLD.user_id)
        AND NEW.id = OLD.id
        AND NEW.occurred_at = OLD.occurred_at
        AND NEW.event = OLD.event
        AND NEW.user_id = OLD.user_id
        AND NEW.session_id IS NOT DISTINCT FROM OLD.session_id
        AND NEW.ip_address = ''
        AND NEW.user_agent = ''
        AND OLD.detail @> NEW.detail
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_events rows cannot be updated';
END;
$$;
