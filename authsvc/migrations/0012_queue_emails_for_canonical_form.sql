-- Emails become canonical (NFKC + case folding, IDNA domain; docs/accounts.md). SQL has neither case folding nor IDNA, so this queues the rows that may change
-- and the service rewrites them in Python (store/users.py canonicalize_queued_emails), under
-- a lock, at `migrate` and at `serve` start-up. Earlier code stored emails lower-cased, so an
-- all-ASCII row is canonical already or has no canonical form (and then keeps its own):
-- only rows with a non-ASCII character, upper case, or the domain's trailing dot are queued.
-- No foreign key, so nothing that deletes or truncates users has to know of this table; the
-- rewrite drops the entries of users that are gone.
CREATE TABLE email_canonicalization_queue (
    user_id uuid PRIMARY KEY
);

INSERT INTO email_canonicalization_queue (user_id)
SELECT id FROM users
WHERE octet_length(email) <> char_length(email) OR email <> lower(email) OR email LIKE '%.';
