-- Media: what the preview worker learns of an image (its displayed size, a thumbnail
-- object stored beside the original, a tiny placeholder), and the queue of images waiting
-- for it. A job lives in the database so that a restart loses none, and is claimed with a
-- lease so that several instances (and a crashed one's leftovers) share the queue safely.
ALTER TABLE file_uploads ADD COLUMN width INTEGER;
ALTER TABLE file_uploads ADD COLUMN height INTEGER;
ALTER TABLE file_uploads ADD COLUMN thumbnail_key TEXT;
ALTER TABLE file_uploads ADD COLUMN preview TEXT;
CREATE INDEX idx_file_uploads_thumbnail_key ON file_uploads (thumbnail_key) WHERE thumbnail_key IS NOT NULL;
CREATE TABLE media_jobs (
    file_id      INTEGER   PRIMARY KEY NOT NULL REFERENCES file_uploads(id) ON DELETE CASCADE,
    attempts     INTEGER   NOT NULL DEFAULT 0,
    leased_until TIMESTAMP,
    created_at   TIMESTAMP NOT NULL
);
CREATE INDEX idx_media_jobs_lease ON media_jobs (leased_until);
