-- Private signing keys are stored encrypted (envelope encryption, see
-- authsvc/domain/key_encryption.py): the PEM under a data key of its own
-- (private_key_ciphertext), that data key under a key-encryption key (KEK) kept
-- outside the database (wrapped_data_key), and that KEK's id (kek_id).
--
-- SQL cannot encrypt without the KEK, so rows from before stay in private_key_pem
-- until the service seals them as it starts (or `authsvc migrate` does), each row
-- in one UPDATE that writes the ciphertext and empties private_key_pem: no key is
-- lost at any point. The column stays, always NULL, for a later migration to drop.
ALTER TABLE signing_keys
    ADD COLUMN kek_id text,
    ADD COLUMN wrapped_data_key bytea,
    ADD COLUMN private_key_ciphertext bytea,
    ALTER COLUMN private_key_pem DROP NOT NULL,
    -- Each row holds its key exactly once: sealed, or (until sealed) in plaintext.
    ADD CONSTRAINT signing_keys_private_key_sealed_or_plaintext CHECK (
        (kek_id IS NULL) = (wrapped_data_key IS NULL)
        AND (kek_id IS NULL) = (private_key_ciphertext IS NULL)
        AND (kek_id IS NULL) <> (private_key_pem IS NULL)
    );

-- NOT VALID: the rows from before pass until sealed, but no write may store a key in
-- plaintext again; a replica of the previous version that tries (`keys rotate`) fails.
ALTER TABLE signing_keys
    ADD CONSTRAINT signing_keys_no_plaintext CHECK (private_key_pem IS NULL) NOT VALID;
