-- Failed-login counters shared by every replica, one row per bucket:
-- 'account:<sha256 of the normalised email>' or 'ip:<address>'. A bucket at its
-- limit refuses logins until window_started_at + the window; then it starts over.
CREATE TABLE login_failures (
    bucket            text        PRIMARY KEY,
    failures          integer     NOT NULL,
    window_started_at timestamptz NOT NULL
);

-- The sweeper: buckets whose window has passed.
CREATE INDEX login_failures_window_started_at_idx ON login_failures (window_started_at);
