-- Second factors (docs/second-factors.md): one row per TOTP app or passkey of a user, and
-- the user's single-use recovery codes. Per-user tables, keyed by user first, co-located
-- with users on Citus; both go with the account (DeleteUser deletes the users row).
CREATE TABLE user_factors (
    user_id              uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id                   uuid        NOT NULL,
    kind                 text        NOT NULL CHECK (kind IN ('totp', 'passkey')),
    name                 text        NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL,
    confirmed_at         timestamptz,          -- NULL: a TOTP enrolment awaiting ConfirmTotp
    enrolment_expires_at timestamptz,          -- set while unconfirmed
    last_used_at         timestamptz,
    -- TOTP: the base32 secret sealed under the key-encryption key (as signing keys are),
    -- bound to (user_id, id) as associated data.
    totp_kek_id          text,
    totp_wrapped_key     bytea,
    totp_secret_sealed   bytea,
    totp_last_step       bigint,               -- the last accepted time step: replay refused
    -- Passkeys (WebAuthn credentials).
    credential_id        bytea,
    public_key           bytea,
    sign_count           bigint,
    transports           text[],
    PRIMARY KEY (user_id, id)
);
CREATE UNIQUE INDEX user_factors_one_totp ON user_factors (user_id)
    WHERE kind = 'totp' AND confirmed_at IS NOT NULL;
CREATE UNIQUE INDEX user_factors_credential ON user_factors (user_id, credential_id)
    WHERE kind = 'passkey';
-- The sweeper deletes enrolments never confirmed once they expire (store/sweep.py).
CREATE INDEX user_factors_enrolment_expiry ON user_factors (enrolment_expires_at)
    WHERE confirmed_at IS NULL;

-- Recovery codes as SHA-256 of their normalised form, never raw. A code is spent by
-- setting used_at (once: the UPDATE checks used_at IS NULL); a new set replaces the rows.
CREATE TABLE recovery_codes (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('user_factors', 'user_id', colocate_with => 'users');
        PERFORM create_distributed_table('recovery_codes', 'user_id', colocate_with => 'users');
    END IF;
END;
$$;
