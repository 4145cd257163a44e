-- Each account's email gets a lookup table of its own, keyed by the email, so that on Citus
-- (which distributes users by id) finding an account by its email is one single-shard
-- statement here and one on users by id. The email's uniqueness moves here with it: Register
-- claims the email in this table first (ON CONFLICT DO NOTHING), then inserts the user, in
-- one transaction. users.email stays, always equal to the account's key here: every change
-- of an email (Register, the canonicalisation of migration 0012, DeleteUser) writes both.
-- No foreign key to users: Citus refuses one between tables it does not co-locate.
CREATE TABLE user_emails (
    email   text PRIMARY KEY,
    user_id uuid NOT NULL
);

-- Every account keeps the email it has. Those still queued by migration 0012 hold an earlier
-- release's form until the service rewrites the queue (store/users.py), which moves the key
-- to the canonical form or, if another account holds that, leaves it where it is; until then
-- these rows are unique as they were under users' own constraint, dropped only below.
INSERT INTO user_emails (email, user_id)
SELECT email, id FROM users;

ALTER TABLE users DROP CONSTRAINT users_email_key;

-- Reset tokens will be distributed by token_hash, not co-located with users: the foreign key
-- goes, so DeleteUser deletes the account's tokens itself (store/erasure.py), found through
-- password_reset_tokens_user_id_idx (migration 0016), and issuing one locks the account row.
ALTER TABLE password_reset_tokens DROP CONSTRAINT password_reset_tokens_user_id_fkey;
