-- Unread counts (`GET /api/channels`) read only this index: the range of a channel after
-- the member's position, with the author and whether the message is deleted in the entry,
-- so no message row is visited. It also serves everything the (channel_id, id) index did.
CREATE INDEX idx_messages_channel_read ON messages (channel_id, id, user_id, deleted_at);
DROP INDEX idx_messages_channel_id;
