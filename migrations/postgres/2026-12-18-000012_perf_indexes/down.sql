CREATE INDEX idx_messages_fts ON messages
    USING GIN (to_tsvector('simple', content)) WHERE deleted_at IS NULL;
DROP INDEX idx_messages_words;
ALTER TABLE messages DROP COLUMN content_words;
CREATE INDEX idx_messages_channel_id ON messages (channel_id, id);
DROP INDEX idx_messages_channel_read;
