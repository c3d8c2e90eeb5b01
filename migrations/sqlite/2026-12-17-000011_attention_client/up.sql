-- The channel's "Files" panel: live files of one channel, newest first, as an index range
-- (GET /api/channels/{id}/files pages by id).
CREATE INDEX idx_file_uploads_channel_live ON file_uploads (channel_id, id) WHERE is_deleted = 0;

-- A member hid this direct message from their sidebar (POST /api/dms/{id}/hide); the next
-- message in it shows it again.
ALTER TABLE channel_members ADD COLUMN hidden BOOLEAN NOT NULL DEFAULT 0;
