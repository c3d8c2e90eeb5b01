CREATE TABLE users (
    id            SERIAL PRIMARY KEY,
    username      VARCHAR(32)  NOT NULL UNIQUE,
    display_name  VARCHAR(64)  NOT NULL,
    password_hash TEXT         NOT NULL,
    created_at    TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE channels (
    id         SERIAL PRIMARY KEY,
    name       VARCHAR(80) NOT NULL,
    is_private BOOLEAN     NOT NULL DEFAULT FALSE,
    created_by INTEGER     NOT NULL REFERENCES users(id),
    created_at TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_channels_public ON channels (is_private, id);

CREATE TABLE channel_members (
    channel_id INTEGER     NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id    INTEGER     NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role       VARCHAR(16) NOT NULL DEFAULT 'member',
    joined_at  TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX idx_channel_members_user ON channel_members (user_id, channel_id);

CREATE TABLE messages (
    id         SERIAL PRIMARY KEY,
    channel_id INTEGER   NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id    INTEGER   NOT NULL REFERENCES users(id),
    content    TEXT      NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
-- Keyset pagination: WHERE channel_id = ? AND id < ? ORDER BY id DESC LIMIT ?
CREATE INDEX idx_messages_channel_id ON messages (channel_id, id);

CREATE TABLE file_uploads (
    id                 SERIAL PRIMARY KEY,
    message_id         INTEGER      NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    file_name          VARCHAR(255) NOT NULL,
    s3_key             VARCHAR(512) NOT NULL UNIQUE,
    content_type       VARCHAR(100),
    file_size          BIGINT,
    uploaded_at        TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    uploaded_by        INTEGER      REFERENCES users(id),
    is_deleted         BOOLEAN      NOT NULL DEFAULT FALSE,
    -- Denormalised from the message so access checks need no join.
    channel_id         INTEGER      NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    sha256             VARCHAR(64),
    deleted_at         TIMESTAMP,
    -- Set by the purger once the object of a deleted row is gone from the store.
    purged_at          TIMESTAMP,
    download_count     BIGINT       NOT NULL DEFAULT 0,
    last_downloaded_at TIMESTAMP
);
CREATE INDEX idx_file_uploads_message_id ON file_uploads (message_id);
CREATE INDEX idx_file_uploads_uploaded_by ON file_uploads (uploaded_by);
CREATE INDEX idx_file_uploads_uploaded_at ON file_uploads (uploaded_at);
CREATE INDEX idx_file_uploads_channel_id ON file_uploads (channel_id);
CREATE INDEX idx_file_uploads_deleted ON file_uploads (is_deleted, deleted_at);
