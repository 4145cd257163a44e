-- Exactly-once Refresh (docs/operations.md, "Exactly-once Refresh and retries"): a
-- rotation made with an idempotency key keeps the key's hash on the consumed token's
-- row, so that a retry of that rotation with the same key is told apart from a replay
-- of the spent token. Only a hash (HMAC-SHA-256 keyed by the presented token) is kept.
-- NULL for a rotation without a key, for the token not yet rotated, and for rows
-- rotated by a replica of the previous release, which neither reads nor writes it.
ALTER TABLE refresh_tokens ADD COLUMN idempotency_key_hash bytea;
