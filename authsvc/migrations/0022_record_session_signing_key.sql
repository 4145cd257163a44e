-- The signing key (`kid`) of each session's latest access token, written at sign-in and
-- at every rotation, for AdminService.RevokeSessions' "this signing key leaked" filter
-- (docs/operations.md, "Revoking sessions by filter"). '' is unknown: a session
-- created, and not yet refreshed, by a release before this one. The constant default
-- adds the column without rewriting the table and lets such a replica keep inserting
-- sessions during a rolling upgrade (its rotations leave the column as it was).
ALTER TABLE sessions ADD COLUMN signing_key_id text NOT NULL DEFAULT '';

-- The one selective filter no index served: a leaked key's live sessions, walked in id
-- order (the batches' lock order) from the last batch's id, so a batch reads about its
-- own rows. Users have sessions_user_live_idx; the other filters (time, CIDR, user
-- agent, device) walk the primary key once across all batches (store/bulk_revocation.py).
CREATE INDEX sessions_live_signing_key_idx ON sessions (signing_key_id, id)
    WHERE revoked_at IS NULL;
