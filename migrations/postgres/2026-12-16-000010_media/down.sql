DROP TABLE media_jobs;
DROP INDEX idx_file_uploads_thumbnail_key;
ALTER TABLE file_uploads DROP COLUMN preview;
ALTER TABLE file_uploads DROP COLUMN thumbnail_key;
ALTER TABLE file_uploads DROP COLUMN height;
ALTER TABLE file_uploads DROP COLUMN width;
