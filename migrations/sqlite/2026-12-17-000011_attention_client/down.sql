ALTER TABLE channel_members DROP COLUMN hidden;
DROP INDEX idx_file_uploads_channel_live;
