DROP INDEX idx_file_uploads_name_trgm;
DROP INDEX idx_messages_trgm;
DROP INDEX idx_messages_fts;
DROP TABLE message_mentions;
ALTER TABLE channel_members DROP COLUMN last_read_id;
