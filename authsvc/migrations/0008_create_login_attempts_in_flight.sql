-- Login attempts whose password is being checked, one row per attempt and bucket.
-- An attempt is admitted only while a bucket's failures plus its attempts in flight
-- are under the limit, so guesses sent in parallel cannot all pass the check before
-- any of them is counted. A row goes when its attempt settles; one whose process
-- died first stops counting after a couple of minutes and the sweeper removes it.
CREATE TABLE login_attempts_in_flight (
    attempt_id  uuid        NOT NULL,
    bucket      text        NOT NULL,
    admitted_at timestamptz NOT NULL,
    PRIMARY KEY (attempt_id, bucket)
);

CREATE INDEX login_attempts_in_flight_bucket_idx
    ON login_attempts_in_flight (bucket, admitted_at);
CREATE INDEX login_attempts_in_flight_admitted_at_idx
    ON login_attempts_in_flight (admitted_at);
