-- Kept in step with the PostgreSQL migration of the same name, which indexes the keys in
-- byte order for `chatserver verify`. Nothing to do here: SQLite compares text as bytes
-- (the BINARY collation), so the unique index on s3_key already serves that order.
SELECT 1;
