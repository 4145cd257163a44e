-- Lockouts that spare the owner: failures are counted per (account, address) first,
-- per account and per address only for addresses the account has not signed in from,
-- and an account under a long attack is locked for a day rather than a window.
-- Buckets now differ in window length, so each row keeps its own. Sign-ups are
-- counted in the same table ('signup:' buckets): one kind of windowed counter, one sweep.
ALTER TABLE login_failures
    ADD COLUMN window_length interval NOT NULL DEFAULT interval '15 minutes';

-- Addresses an account signed in from, keyed by sha256 of (canonical email, address):
-- no email or address in clear. A failure elsewhere never locks these out.
CREATE TABLE login_known_addresses (
    pair_bucket     text        PRIMARY KEY,
    last_success_at timestamptz NOT NULL
);

-- The sweeper: addresses not used for the retention.
CREATE INDEX login_known_addresses_last_success_at_idx
    ON login_known_addresses (last_success_at);
