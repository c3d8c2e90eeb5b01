DROP INDEX idx_file_uploads_live_age;
ALTER TABLE channels DROP COLUMN retention_days;
DROP TABLE quota_reservations;
ALTER TABLE users DROP COLUMN storage_used_bytes;
