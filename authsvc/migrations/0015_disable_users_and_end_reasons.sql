-- Disabled accounts (AdminService.DisableUser / EnableUser): Login refuses them,
-- and a session is created only for an account not disabled (store/sessions.py).
-- disabled_at NULL means enabled; the reason is the operator's note.
ALTER TABLE users
    ADD COLUMN disabled_at     timestamptz,
    ADD COLUMN disabled_reason text NOT NULL DEFAULT '';

-- The endings issue 13 adds, in the feed's words (the SessionEndReason names of
-- auth_service.proto, lower case). Migration 0014's trigger needs no change: every
-- one of them sets end_reason, and its fallback only reads a previous version's rows.
ALTER TABLE sessions
    DROP CONSTRAINT sessions_end_reason_known,
    ADD CONSTRAINT sessions_end_reason_known CHECK (end_reason IN (
        'user_logout', 'user_revoked', 'refresh_token_reuse',
        'admin_revoked', 'user_disabled', 'password_changed', 'password_reset',
        'user_deleted'));
