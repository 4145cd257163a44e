-- Refresh lineage (docs/operations.md, "Refresh lineage"): one row per presentation
-- of a session's refresh token to Refresh that rotated it, served its successor
-- again, or ended the session as reuse. Ids only, never a token or its hash. Written
-- under the session's row lock, in the statement or transaction of the outcome.
--
-- The tokens are named by id without a foreign key: a rotated token's row is swept at
-- its own expiry while the session, and its lineage, live on. The session's row is
-- referenced: the lineage lives exactly as long as the session (its tombstone).
CREATE TABLE refresh_lineage (
    -- Recording order: drawn under the session's lock, so a session's steps are in
    -- the order they happened whatever the replicas' clocks say.
    id                 bigint      GENERATED ALWAYS AS IDENTITY,
    session_id         uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    presented_token_id uuid        NOT NULL,
    -- The token issued or served again; NULL when the presentation ended the session.
    successor_token_id uuid,
    presented_at       timestamptz NOT NULL,
    -- The caller's, as the audit trail keeps them; blanked by DeleteUser's erasure.
    ip_address         text        NOT NULL,
    user_agent         text        NOT NULL,
    outcome            text        NOT NULL
        CONSTRAINT refresh_lineage_outcome_known
        CHECK (outcome IN ('rotated', 'grace_replay', 'idempotent_replay', 'reuse_detected')),
    within_grace       boolean     NOT NULL,
    -- The one index, so a refresh writes one index entry: one session's history in
    -- order (GetSessionLineage reads its newest steps), the sweeper's batches and the
    -- cascade from sessions.
    CONSTRAINT refresh_lineage_pkey PRIMARY KEY (session_id, id)
);
