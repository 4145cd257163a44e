-- Where a session's login address is (docs/operations.md, GeoIP): the ISO 3166-1
-- alpha-2 country and the English city name, looked up once at sign-in, like
-- ip_address beside them; empty when unknown or when no GeoIP database is set.
-- A constant default adds the columns without rewriting the table, and lets a
-- replica still running the previous release keep inserting sessions.
ALTER TABLE sessions
    ADD COLUMN country text NOT NULL DEFAULT '',
    ADD COLUMN city    text NOT NULL DEFAULT '';
