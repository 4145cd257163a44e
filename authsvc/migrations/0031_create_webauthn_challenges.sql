-- WebAuthn challenges (docs/second-factors.md, "Passkeys"): one row per ceremony begun,
-- deleted by the statement that uses it (single use: the DELETE ... RETURNING either
-- wins or finds nothing), or by the sweeper once expired.
--
-- Keyed by the challenge's own id, not by user: a PasskeyLogin challenge has no user yet.
-- The challenge is kept as its SHA-256 only; the browser's answer carries the challenge,
-- whose hash must match.
CREATE TABLE webauthn_challenges (
    id             uuid        PRIMARY KEY,
    -- NULL: a PasskeyLogin challenge, for whichever user's discoverable passkey answers.
    user_id        uuid,
    purpose        text        NOT NULL CHECK (purpose IN ('registration', 'assertion')),
    -- The pending login's id or the session's id it was issued for; NULL for PasskeyLogin.
    binding        uuid,
    challenge_hash bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    -- The label a registration gives its passkey.
    name           text        NOT NULL DEFAULT ''
);
-- The sweeper deletes expired challenges (store/sweep.py).
CREATE INDEX webauthn_challenges_expiry ON webauthn_challenges (expires_at);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_table('webauthn_challenges', 'id', colocate_with => 'none');
    END IF;
END;
$$;
