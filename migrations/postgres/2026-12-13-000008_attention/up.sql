-- Read state, mentions and search.

-- How far the member has read the channel: a message id (0: nothing yet). Only ever moves
-- forward. Unread messages are those after it, counted on idx_messages_channel_id.
ALTER TABLE channel_members ADD COLUMN last_read_id INTEGER NOT NULL DEFAULT 0;

-- Who a message mentions (`@username` of a member, or everyone for `@channel`). Rows are
-- rewritten by an edit and removed when the message is deleted, so counting a member's
-- unread mentions is one index range: (user_id, channel_id, message_id > last_read_id).
CREATE TABLE message_mentions (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX idx_message_mentions_user ON message_mentions (user_id, channel_id, message_id);

-- Search. Words and word prefixes: full-text search over the 'simple' configuration (no
-- stemming, no stop words: any language). Runs of 3+ characters inside text written
-- without spaces (Chinese, Japanese), and file names: pg_trgm, which serves ILIKE
-- '%run%'. Expression indexes: nothing to keep in step, and no backfill beyond the build.
-- Only live rows are indexed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX idx_messages_fts ON messages
    USING GIN (to_tsvector('simple', content)) WHERE deleted_at IS NULL;
CREATE INDEX idx_messages_trgm ON messages
    USING GIN (content gin_trgm_ops) WHERE deleted_at IS NULL;
CREATE INDEX idx_file_uploads_name_trgm ON file_uploads
    USING GIN (file_name gin_trgm_ops) WHERE is_deleted = FALSE;
