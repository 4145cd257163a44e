-- A rotated-in key is published (GetJwks) from the rotation on but signs only from
-- activates_at, one key-reload interval later: by then every replica has reloaded and
-- publishes it, so a verifier that meets its kid and refetches the JWKS from any
-- replica finds it. The key it replaces retires (stops signing) at that same instant.
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz;
UPDATE signing_keys SET activates_at = created_at;
ALTER TABLE signing_keys ALTER COLUMN activates_at SET NOT NULL;
