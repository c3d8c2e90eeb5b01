-- Idempotency-Key (REST) and client_id (WebSocket): the first answer to a request, kept so
-- that a retry of it gets that answer again instead of doing the work twice. In the database,
-- not in memory, so it holds across instances; the primary key decides races between them.
-- `scope` keeps the two namespaces apart: 'http' for Idempotency-Key, 'ws' for client_id.
CREATE TABLE idempotency_keys (
    user_id       INTEGER      NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scope         VARCHAR(8)   NOT NULL,
    client_key    VARCHAR(255) NOT NULL,
    -- sha256 (hex) of what the request asked: the same key for another request is refused.
    fingerprint   VARCHAR(64)  NOT NULL,
    -- Who holds an in-flight claim: its completion and release name it, so a request whose
    -- abandoned-looking claim was taken over cannot complete or release the new one.
    claim_token   VARCHAR(36)  NOT NULL,
    -- 'in_flight' or 'done'.
    state         VARCHAR(16)  NOT NULL,
    status_code   INTEGER,
    -- The answer's JSON body, once done.
    response_body TEXT,
    created_at    TIMESTAMP    NOT NULL,
    PRIMARY KEY (user_id, scope, client_key)
);
-- The sweeper deletes expired keys by age.
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys (created_at);
