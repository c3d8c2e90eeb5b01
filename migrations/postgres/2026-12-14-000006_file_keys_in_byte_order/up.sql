-- `chatserver verify` pages through file_uploads in the byte order of the keys (the order S3
-- lists objects in): `ORDER BY s3_key COLLATE "C"`, which the unique index (in the database's
-- collation) cannot serve unless that collation is C. Without this index each page would
-- sort the whole table.
CREATE INDEX idx_file_uploads_s3_key_bytes ON file_uploads (s3_key COLLATE "C");
