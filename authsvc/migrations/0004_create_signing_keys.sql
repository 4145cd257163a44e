-- Access-token signing keys, shared by every replica. Exactly one key is
-- active (retired_at IS NULL); retired keys keep verifying until the tokens
-- they signed have expired.
CREATE TABLE signing_keys (
    kid             text        PRIMARY KEY,
    algorithm       text        NOT NULL,
    private_key_pem bytea       NOT NULL,
    public_jwk      jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    retired_at      timestamptz
);

CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys ((true)) WHERE retired_at IS NULL;
