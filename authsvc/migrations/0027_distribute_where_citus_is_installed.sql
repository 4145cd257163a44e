-- Where the citus extension is installed, distribute the tables over its workers
-- (docs/scaling.md, "Citus"); on plain PostgreSQL this migration does nothing.
--
-- Everything a request reads or writes for one user lives on that user's shard: users by
-- id, and sessions, refresh tokens, refresh lineage and the canonicalisation queue
-- co-located with it on user_id, so every statement filtered by the user is a router
-- query. The other keys a request starts from get tables of their own: the email lookup
-- (Login's first statement) by email, the login throttle by bucket, password-reset
-- tokens by their hash. Signing keys, few and read everywhere, are a reference table.
-- Plain tables stay on the coordinator: the audit trail (events without a user, one
-- order across users), the revocation log and its sequence (one total order; NOTIFY
-- reaches the feed's listeners, which are on the coordinator), the webhook outbox
-- (written by the triggers below, which Citus refuses), the migrations ledger.
--
-- The work is a function so that a database which got Citus after this migration ran
-- can be distributed by calling it once: SELECT authsvc_distribute_tables();
CREATE FUNCTION authsvc_distribute_tables() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Citus refuses triggers on a distributed table, and a shard's trigger would run on
    -- a worker: webhooks are refused on Citus (authsvc/core/pooler.py says where).
    DROP TRIGGER IF EXISTS sessions_webhook_created ON sessions;
    DROP TRIGGER IF EXISTS sessions_webhook_refreshed_after_idle ON sessions;
    DROP TRIGGER IF EXISTS sessions_webhook_ended ON sessions;
    -- Migration 0025's help for replicas of the release before it, which insert tokens and
    -- lineage without user_id: no such replica may run against a distributed schema.
    DROP TRIGGER IF EXISTS refresh_tokens_user_id_from_session ON refresh_tokens;
    DROP TRIGGER IF EXISTS refresh_lineage_user_id_from_session ON refresh_lineage;

    PERFORM create_distributed_table('users', 'id');
    PERFORM create_distributed_table('sessions', 'user_id', colocate_with => 'users');
    PERFORM create_distributed_table('refresh_tokens', 'user_id', colocate_with => 'users');
    PERFORM create_distributed_table('refresh_lineage', 'user_id', colocate_with => 'users');
    PERFORM create_distributed_table(
        'email_canonicalization_queue', 'user_id', colocate_with => 'users');
    PERFORM create_distributed_table('user_emails', 'email', colocate_with => 'none');
    PERFORM create_distributed_table('login_failures', 'bucket', colocate_with => 'none');
    PERFORM create_distributed_table(
        'login_attempts_in_flight', 'bucket', colocate_with => 'login_failures');
    PERFORM create_distributed_table(
        'login_known_addresses', 'pair_bucket', colocate_with => 'login_failures');
    PERFORM create_distributed_table(
        'password_reset_tokens', 'token_hash', colocate_with => 'none');
    PERFORM create_reference_table('signing_keys');
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM authsvc_distribute_tables();
    END IF;
END;
$$;
