-- Webhooks (docs/operations.md, "Webhooks"): session events for HTTP endpoints,
-- delivered at least once from this outbox by a worker in every replica.
--
-- Triggers on sessions write the rows, in the event's own transaction, so every
-- way of creating, refreshing or ending a session is covered by construction (a
-- later ending sets revoked_at like the others, and is seen). They write only on a
-- connection whose pool sets `authsvc.webhook_endpoints` (the endpoints' URLs,
-- separated by spaces; store/webhooks.py `outbox_settings`): without webhooks
-- configured a trigger costs its WHEN test and nothing else, and a replica of the
-- previous release writes no rows.

-- One row per event per endpoint: its id is the `webhook-id` header, the same on
-- every attempt. `data` is the payload's "data" member, built here from the row.
CREATE TABLE webhook_deliveries (
    id               uuid        PRIMARY KEY,
    endpoint         text        NOT NULL,
    event_type       text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    user_id          uuid        NOT NULL,
    data             jsonb       NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
        CONSTRAINT webhook_deliveries_state_known
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    -- While an attempt is in flight, the end of its lease.
    next_attempt_at  timestamptz NOT NULL,
    last_attempt_at  timestamptz,
    -- NULL: the last attempt got no answer (refused, timed out), or none was made.
    last_http_status integer,
    last_error       text        NOT NULL DEFAULT ''
);

-- The worker's claim: due pending deliveries, oldest due first.
CREATE INDEX webhook_deliveries_due_idx
    ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
-- ListWebhookDeliveries: by state, newest first, keyset (occurred_at, id).
CREATE INDEX webhook_deliveries_listing_idx
    ON webhook_deliveries (state, occurred_at DESC, id DESC);
-- The sweeper: settled deliveries past the retention.
CREATE INDEX webhook_deliveries_settled_idx
    ON webhook_deliveries (last_attempt_at) WHERE state <> 'pending';
-- DeleteUser erases the addresses its events carry.
CREATE INDEX webhook_deliveries_user_id_idx ON webhook_deliveries (user_id);

-- One delivery of the event for each endpoint the connection's pool names.
CREATE FUNCTION webhook_outbox_append(
    event_type text, occurred_at timestamptz, user_id uuid, data jsonb
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO webhook_deliveries
        (id, endpoint, event_type, occurred_at, user_id, data, next_attempt_at)
    SELECT gen_random_uuid(), endpoint, event_type, occurred_at, user_id, data, occurred_at
    FROM unnest(string_to_array(current_setting('authsvc.webhook_endpoints', true), ' '))
        AS endpoint
    WHERE endpoint <> ''
$$;

-- Instants in the payload: RFC 3339 in UTC, whatever the connection's TimeZone.
CREATE FUNCTION webhook_instant(t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- What every session event says of its session. No tokens; the device as parsed
-- from the user agent, not the user agent itself.
CREATE FUNCTION webhook_session_data(s sessions) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'session_id', s.id,
        'user_id', s.user_id,
        'device', jsonb_build_object(
            'type', s.device_type, 'browser', s.browser, 'os', s.os, 'name', s.device_name))
$$;

-- session.created, with whether the user has signed in before from this device
-- (type, browser and OS) and from this address: from the user's other sessions,
-- live and ended (kept for the tombstone retention), through sessions' user_id index.
CREATE FUNCTION webhook_session_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_outbox_append(
        'session.created', NEW.created_at, NEW.user_id,
        webhook_session_data(NEW) || jsonb_build_object(
            'created_at', webhook_instant(NEW.created_at),
            'expires_at', webhook_instant(NEW.expires_at),
            'remember_me', NEW.remember_me,
            'ip_address', NEW.ip_address,
            'country', NEW.country,
            'city', NEW.city,
            'new_device', NOT EXISTS (
                SELECT FROM sessions o
                WHERE o.user_id = NEW.user_id AND o.id <> NEW.id
                  AND o.device_type = NEW.device_type AND o.browser = NEW.browser
                  AND o.os = NEW.os),
            'new_address', NOT EXISTS (
                SELECT FROM sessions o
                WHERE o.user_id = NEW.user_id AND o.id <> NEW.id
                  AND o.ip_address = NEW.ip_address)));
    RETURN NULL;
END;
$$;

-- session.refreshed_after_idle: a rotation that slid a session last active longer
-- ago than `authsvc.webhook_idle_after` (an interval; unset: never).
CREATE FUNCTION webhook_session_refreshed_after_idle() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_outbox_append(
        'session.refreshed_after_idle', NEW.last_active_at, NEW.user_id,
        webhook_session_data(NEW) || jsonb_build_object(
            'refreshed_at', webhook_instant(NEW.last_active_at),
            'previously_active_at', webhook_instant(OLD.last_active_at),
            'idle_seconds', extract(epoch FROM NEW.last_active_at - OLD.last_active_at)::bigint,
            'idle_expires_at', webhook_instant(NEW.idle_expires_at)));
    RETURN NULL;
END;
$$;

-- session.ended: its reason as the SessionEndReason value's name (auth_service.proto;
-- core/models.py's values are those names in lower case), when and who.
CREATE FUNCTION webhook_session_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_outbox_append(
        'session.ended', NEW.revoked_at, NEW.user_id,
        webhook_session_data(NEW) || jsonb_build_object(
            'ended_at', webhook_instant(NEW.revoked_at),
            'end_reason', 'SESSION_END_REASON_' || upper(COALESCE(NEW.end_reason, 'unspecified')),
            'ended_by', jsonb_build_object(
                'kind', COALESCE(NEW.ended_by_kind, ''),
                'session_id', NEW.ended_by_session,
                'operator', COALESCE(NEW.ended_by_operator, ''))));
    RETURN NULL;
END;
$$;

-- Row triggers whose WHEN reads the setting: without webhooks no function is called,
-- so Refresh's one statement costs what it did.
CREATE TRIGGER sessions_webhook_created
    AFTER INSERT ON sessions
    FOR EACH ROW WHEN (current_setting('authsvc.webhook_endpoints', true) <> '')
    EXECUTE FUNCTION webhook_session_created();

CREATE TRIGGER sessions_webhook_refreshed_after_idle
    AFTER UPDATE OF last_active_at ON sessions
    FOR EACH ROW WHEN (
        NEW.revoked_at IS NULL
        AND NEW.last_active_at - OLD.last_active_at
            >= nullif(current_setting('authsvc.webhook_idle_after', true), '')::interval)
    EXECUTE FUNCTION webhook_session_refreshed_after_idle();

CREATE TRIGGER sessions_webhook_ended
    AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (
        OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
        AND current_setting('authsvc.webhook_endpoints', true) <> '')
    EXECUTE FUNCTION webhook_session_ended();
