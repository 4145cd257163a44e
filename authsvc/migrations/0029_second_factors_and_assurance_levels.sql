-- Second factors and assurance levels (docs/second-factors.md).
--
-- A session records how its user proved who they are: `aal` (1: a password; 2: with a
-- second factor, or a passkey alone) and each method with when it was last verified, as
-- two parallel arrays ('password', 'totp', 'recovery_code', 'passkey'). A session from
-- before this migration has none recorded: it was a password, at its creation.
ALTER TABLE sessions
    ADD COLUMN aal smallint NOT NULL DEFAULT 1 CONSTRAINT sessions_aal_known CHECK (aal IN (1, 2)),
    ADD COLUMN auth_methods text[] NOT NULL DEFAULT '{}',
    ADD COLUMN auth_method_times timestamptz[] NOT NULL DEFAULT '{}',
    DROP CONSTRAINT sessions_end_reason_known,
    ADD CONSTRAINT sessions_end_reason_known CHECK (end_reason IN (
        'user_logout', 'user_revoked', 'refresh_token_reuse',
        'admin_revoked', 'user_disabled', 'password_changed', 'password_reset',
        'user_deleted', 'idle_timeout', 'absolute_timeout', 'bulk_revoked',
        'session_limit_evicted', 'second_factor_changed'));

-- An operator's mark: the account must have a second factor (AdminService.SetSecondFactorRequired).
ALTER TABLE users ADD COLUMN second_factor_required boolean NOT NULL DEFAULT false;

-- A login whose password was right and that awaits its second step (CompleteLogin, or an
-- enrolment when the account must enrol first). Its token is routed as a refresh token is
-- (`<user id>.<secret>`) and stored hashed. `password_digest` is SHA-256 of the password
-- hash that was verified: a password changed meanwhile refuses the completion, as it
-- refuses a login in flight. The device is the login's. Swept once expired.
CREATE TABLE pending_logins (
    user_id            uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash         bytea       NOT NULL,
    id                 uuid        NOT NULL,
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    password_digest    bytea       NOT NULL,
    enrolment_required boolean     NOT NULL,
    failed_attempts    integer     NOT NULL DEFAULT 0,
    remember_me        boolean     NOT NULL,
    device_name        text        NOT NULL,
    ip_address         text        NOT NULL,
    user_agent         text        NOT NULL,
    PRIMARY KEY (user_id, token_hash)
);
CREATE INDEX pending_logins_expires_at_idx ON pending_logins (expires_at);

-- Refresh keeps the level: the rotation answers the session's level and methods, so the
-- successor's access token carries them without another read. The same function as
-- migration 0027's otherwise; its answer grows, so it is dropped and created again.
DROP FUNCTION refresh_token_rotate(uuid, bytea, timestamptz, timestamptz, bytea, uuid, bytea,
    text, text, text, boolean, bytea);

CREATE FUNCTION refresh_token_rotate(
    p_user_id uuid,
    p_token_hash bytea,
    p_now timestamptz,
    p_idle_deadline timestamptz,
    p_successor_box bytea,
    p_successor_id uuid,
    p_successor_hash bytea,
    p_signing_key_id text,
    p_ip_address text,
    p_user_agent text,
    p_record_lineage boolean,
    p_idempotency_key_hash bytea
) RETURNS TABLE (rotated_session_id uuid, owner_id uuid, slid_idle_expires_at timestamptz,
    session_aal smallint, session_auth_methods text[], session_auth_method_times timestamptz[],
    session_created_at timestamptz)
LANGUAGE sql AS $$
    WITH locked AS MATERIALIZED (
        SELECT id, user_id, expires_at, idle_expires_at, revoked_at, aal, auth_methods,
            auth_method_times, created_at FROM sessions
        WHERE user_id = p_user_id AND id = (
            SELECT session_id FROM refresh_tokens
            WHERE token_hash = p_token_hash AND user_id = p_user_id)
        FOR UPDATE
    ), consumed AS (
        UPDATE refresh_tokens AS t SET
            rotated_at = p_now, successor_box = p_successor_box,
            idempotency_key_hash = p_idempotency_key_hash,
            expires_at = CASE WHEN p_idempotency_key_hash IS NULL THEN t.expires_at
                ELSE GREATEST(t.expires_at, LEAST(p_idle_deadline, s.expires_at)) END
        FROM locked AS s
        WHERE t.token_hash = p_token_hash AND t.user_id = p_user_id AND t.session_id = s.id
          AND t.rotated_at IS NULL AND t.expires_at > p_now
          AND s.revoked_at IS NULL AND s.idle_expires_at > p_now
        RETURNING s.id AS session_id, LEAST(p_idle_deadline, s.expires_at) AS idle_expires_at,
            t.id AS token_id
    ), touched AS (
        UPDATE sessions SET last_active_at = p_now, idle_expires_at = consumed.idle_expires_at,
            signing_key_id = p_signing_key_id
        FROM consumed WHERE sessions.user_id = p_user_id AND sessions.id = consumed.session_id
    ), successor AS (
        INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at, user_id)
        SELECT p_successor_id, session_id, p_successor_hash, p_now, idle_expires_at, p_user_id
        FROM consumed
    ), recorded AS (
        -- Refresh lineage's step, unless AUTHSVC_REFRESH_LINEAGE is off.
        INSERT INTO refresh_lineage (session_id, presented_token_id, successor_token_id,
            presented_at, ip_address, user_agent, outcome, within_grace, user_id)
        SELECT session_id, token_id, p_successor_id, p_now, p_ip_address, p_user_agent,
            'rotated', false, p_user_id
        FROM consumed WHERE p_record_lineage
    )
    SELECT locked.id, locked.user_id, consumed.idle_expires_at, locked.aal, locked.auth_methods,
        locked.auth_method_times, locked.created_at
    FROM locked LEFT JOIN consumed ON true
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('pending_logins', 'user_id', colocate_with => 'users');
        PERFORM create_distributed_function(
            'refresh_token_rotate(uuid, bytea, timestamptz, timestamptz, bytea, uuid, bytea,'
            ' text, text, text, boolean, bytea)',
            'p_user_id', colocate_with => 'sessions');
    END IF;
END;
$$;
