-- Direct uploads: one row per upload session (the browser sends the bytes straight to the
-- store). The declared size of a live session (pending, completing, ready) counts against
-- its user's quota until the session ends; `object_key` is where the object is stored and
-- stays (the file row points at it once attached).
CREATE TABLE upload_sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      INTEGER   NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id   INTEGER   NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    file_name    TEXT      NOT NULL,
    file_size    BIGINT    NOT NULL,
    content_type TEXT,
    state        TEXT      NOT NULL,
    part_size    BIGINT    NOT NULL,
    part_count   INTEGER   NOT NULL,
    object_key   TEXT      NOT NULL UNIQUE,
    s3_upload_id TEXT,
    sha256       TEXT,
    failure      TEXT,
    file_id      INTEGER,
    updated_at   TIMESTAMP NOT NULL,
    expires_at   TIMESTAMP NOT NULL
);
CREATE INDEX idx_upload_sessions_user_state ON upload_sessions (user_id, state);
CREATE INDEX idx_upload_sessions_expiry ON upload_sessions (state, expires_at);
