-- The size of a direct upload's object when it differs from the declared file_size: image
-- metadata stripped at complete (the upload's file_size stays what the client declared).
ALTER TABLE upload_sessions ADD COLUMN stored_size BIGINT;
