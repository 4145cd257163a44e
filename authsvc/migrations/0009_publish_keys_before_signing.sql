-- A rotated-in key is published (GetJwks) from the rotation on but signs only from
-- activates_at, two key-reload intervals later: by then every replica has reloaded and
-- publishes it, so a verifier that meets its kid and refetches the JWKS from any
-- replica finds it. The key it replaces retires (stops signing) at that same instant.
-- The default keeps a replica of the previous version, which inserts keys without
-- this column during a rolling upgrade, working: its keys sign at once, as before.
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz;
UPDATE signing_keys SET activates_at = created_at;
ALTER TABLE signing_keys ALTER COLUMN activates_at SET NOT NULL,
    ALTER COLUMN activates_at SET DEFAULT now();
