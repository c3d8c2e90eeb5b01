CREATE INDEX idx_messages_channel_id ON messages (channel_id, id);
DROP INDEX idx_messages_channel_read;
