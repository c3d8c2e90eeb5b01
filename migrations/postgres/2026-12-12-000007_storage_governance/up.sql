-- Quotas: the bytes of each user's live files, kept by the same writes that add and delete
-- files (recounted from file_uploads here, once), and the bytes uploads in flight have
-- reserved. A reservation is taken before any byte is stored and dropped when its request
-- ends; one a crash left behind is removed by the sweeper after a few hours.
ALTER TABLE users ADD COLUMN storage_used_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE users SET storage_used_bytes = COALESCE(
    (SELECT SUM(f.file_size) FROM file_uploads f WHERE f.uploaded_by = users.id AND NOT f.is_deleted), 0);
CREATE TABLE quota_reservations (
    id         BIGSERIAL PRIMARY KEY,
    user_id    INTEGER   NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    bytes      BIGINT    NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX idx_quota_reservations_user ON quota_reservations (user_id);
-- Retention: a channel's own limit on the age of its files (NULL: the deployment's).
ALTER TABLE channels ADD COLUMN retention_days INTEGER;
-- The retention sweep reads files by age.
CREATE INDEX idx_file_uploads_live_age ON file_uploads (uploaded_at) WHERE NOT is_deleted;
