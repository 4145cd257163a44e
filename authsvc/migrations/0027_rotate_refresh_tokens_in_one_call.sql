-- Refresh's rotation as one function call (store/sessions.py's rotate_if_current), so that
-- on Citus the call is delegated whole to the worker holding the user's shard: migration
-- 0028 distributes the function by its user argument, co-located with sessions. As a
-- statement of CTEs, Citus would plan each modifying CTE as a subplan of its own, and the
-- successor's and the lineage's INSERT ... SELECT through the coordinator: one router
-- round trip became six, and EXPLAIN could not show the insert's shard. On plain
-- PostgreSQL it is the same statement as before, one round trip, its plan cached.
--
-- Lock the session first (the locking rule, docs/design.md), then consume the token only
-- if it is current and the session live. FOR UPDATE and UPDATE re-read the newest row
-- versions after waiting for a lock, so a token rotated by a transaction that held the
-- lock first fails `rotated_at IS NULL` here and nothing is written. A row with a NULL
-- idle_expires_at: the session was found but the token not consumed (spent, expired, or
-- the session ended); no row: no such token for this user.
CREATE FUNCTION refresh_token_rotate(
    p_user_id uuid,
    p_token_hash bytea,
    p_now timestamptz,
    p_idle_deadline timestamptz,
    p_successor_box bytea,
    p_successor_id uuid,
    p_successor_hash bytea,
    p_signing_key_id text,
    p_ip_address text,
    p_user_agent text,
    p_record_lineage boolean,
    p_idempotency_key_hash bytea
) RETURNS TABLE (rotated_session_id uuid, owner_id uuid, slid_idle_expires_at timestamptz)
LANGUAGE sql AS $$
    WITH locked AS MATERIALIZED (
        SELECT id, user_id, expires_at, idle_expires_at, revoked_at FROM sessions
        WHERE user_id = p_user_id AND id = (
            SELECT session_id FROM refresh_tokens
            WHERE token_hash = p_token_hash AND user_id = p_user_id)
        FOR UPDATE
    ), consumed AS (
        UPDATE refresh_tokens AS t SET
            rotated_at = p_now, successor_box = p_successor_box,
            idempotency_key_hash = p_idempotency_key_hash,
            expires_at = CASE WHEN p_idempotency_key_hash IS NULL THEN t.expires_at
                ELSE GREATEST(t.expires_at, LEAST(p_idle_deadline, s.expires_at)) END
        FROM locked AS s
        WHERE t.token_hash = p_token_hash AND t.user_id = p_user_id AND t.session_id = s.id
          AND t.rotated_at IS NULL AND t.expires_at > p_now
          AND s.revoked_at IS NULL AND s.idle_expires_at > p_now
        RETURNING s.id AS session_id, LEAST(p_idle_deadline, s.expires_at) AS idle_expires_at,
            t.id AS token_id
    ), touched AS (
        UPDATE sessions SET last_active_at = p_now, idle_expires_at = consumed.idle_expires_at,
            signing_key_id = p_signing_key_id
        FROM consumed WHERE sessions.user_id = p_user_id AND sessions.id = consumed.session_id
    ), successor AS (
        INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at, user_id)
        SELECT p_successor_id, session_id, p_successor_hash, p_now, idle_expires_at, p_user_id
        FROM consumed
    ), recorded AS (
        -- Refresh lineage's step, unless AUTHSVC_REFRESH_LINEAGE is off.
        INSERT INTO refresh_lineage (session_id, presented_token_id, successor_token_id,
            presented_at, ip_address, user_agent, outcome, within_grace, user_id)
        SELECT session_id, token_id, p_successor_id, p_now, p_ip_address, p_user_agent,
            'rotated', false, p_user_id
        FROM consumed WHERE p_record_lineage
    )
    SELECT locked.id, locked.user_id, consumed.idle_expires_at
    FROM locked LEFT JOIN consumed ON true
$$;
