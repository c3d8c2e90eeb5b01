ALTER TABLE upload_sessions DROP COLUMN stored_size;
