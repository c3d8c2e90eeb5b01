-- Edits, deletes, threads and reactions on messages; display names on them; direct messages.

-- Set by an edit (the previous content is not kept).
ALTER TABLE messages ADD COLUMN edited_at TIMESTAMP;
-- Soft delete: a deleted message is in no listing and answers 404 on every route.
ALTER TABLE messages ADD COLUMN deleted_at TIMESTAMP;
-- The top-level message a reply belongs to; NULL for top-level messages.
ALTER TABLE messages ADD COLUMN thread_id INTEGER REFERENCES messages(id) ON DELETE CASCADE;
-- On a top-level message: its live replies, and when the newest was posted.
ALTER TABLE messages ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at TIMESTAMP;
-- The channel listing (top-level only) and a thread's listing, both by id.
CREATE INDEX idx_messages_channel_top ON messages (channel_id, id) WHERE thread_id IS NULL;
CREATE INDEX idx_messages_thread ON messages (thread_id, id) WHERE thread_id IS NOT NULL;

-- One row per user per emoji per message; `id` orders a message's reactions by first use.
CREATE TABLE message_reactions (
    id         SERIAL PRIMARY KEY,
    message_id INTEGER     NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    INTEGER     NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji      VARCHAR(64) NOT NULL,
    created_at TIMESTAMP   NOT NULL
);
CREATE UNIQUE INDEX idx_message_reactions_unique ON message_reactions (message_id, emoji, user_id);

-- 'channel' or 'dm'. A direct message's `dm_key` is "<smaller user id>:<larger user id>",
-- unique, so a pair has one conversation however many times (or at once) it is created.
ALTER TABLE channels ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'channel';
ALTER TABLE channels ADD COLUMN dm_key VARCHAR(32);
CREATE UNIQUE INDEX idx_channels_dm_key ON channels (dm_key);
