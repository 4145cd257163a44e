-- One row per signed-in device. A session is live while revoked_at IS NULL
-- and now < idle_expires_at; idle_expires_at never passes expires_at.
CREATE TABLE sessions (
    id              uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL,
    last_active_at  timestamptz NOT NULL,
    idle_expires_at timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    remember_me     boolean     NOT NULL,
    user_agent      text        NOT NULL,
    ip_address      text        NOT NULL,
    device_type     text        NOT NULL,
    browser         text        NOT NULL,
    os              text        NOT NULL,
    device_name     text        NOT NULL,
    revoked_at      timestamptz,
    revoke_reason   text,
    CONSTRAINT sessions_idle_within_lifetime CHECK (idle_expires_at <= expires_at)
);

-- ListSessions keyset paging and Logout(ALL/OTHER) over a user's live sessions.
CREATE INDEX sessions_user_live_idx
    ON sessions (user_id, last_active_at DESC, id DESC)
    WHERE revoked_at IS NULL;

-- The sweeper: expired sessions, then long-revoked ones.
CREATE INDEX sessions_idle_expires_at_idx ON sessions (idle_expires_at);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
