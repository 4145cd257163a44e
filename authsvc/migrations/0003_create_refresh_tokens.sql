-- Refresh tokens, stored only as SHA-256. A rotated token keeps its row so a
-- replay is recognised as reuse; successor_box lets the holder of the rotated
-- token recover its successor during the grace window (see domain/tokens.py).
CREATE TABLE refresh_tokens (
    id            uuid        PRIMARY KEY,
    session_id    uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash    bytea       NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    rotated_at    timestamptz,
    successor_box bytea,
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);

CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);
