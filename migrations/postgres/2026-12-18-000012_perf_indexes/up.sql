-- Unread counts (`GET /api/channels`) read only this index: the range of a channel after
-- the member's position, with the author and whether the message is deleted in the entry,
-- so no message row is visited. It also serves everything the (channel_id, id) index did.
CREATE INDEX idx_messages_channel_read ON messages (channel_id, id, user_id, deleted_at);
DROP INDEX idx_messages_channel_id;

-- Search: each message's words, stored, so a search that tests the newest messages one by
-- one (src/db/search.rs) reads them instead of parsing every message's text again (that
-- parse is most of the cost of such a walk). The GIN index moves onto the column.
ALTER TABLE messages ADD COLUMN content_words tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED;
DROP INDEX idx_messages_fts;
CREATE INDEX idx_messages_words ON messages USING GIN (content_words) WHERE deleted_at IS NULL;
