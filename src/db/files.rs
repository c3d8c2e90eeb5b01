use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::models::{FileUpload, now};
use super::schema::{channel_members, file_uploads};
use crate::db::models::StoredFile;

/// Records stored objects as attachments of a message; call inside the transaction that
/// makes the message visible (or attaches to it).
pub fn insert_all(
    conn: &mut AnyConnection,
    message_id: i32,
    channel_id: i32,
    uploaded_by: i32,
    stored: &[StoredFile],
) -> QueryResult<Vec<FileUpload>> {
    let uploaded_at = now();
    // The uploader's quota count moves with the rows, in the same transaction. A message
    // without files (most of them) writes nothing here: no update, no lock on the user's row.
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    let bytes: i64 = stored.iter().map(|f| f.size as i64).sum();
    super::quota::add_used(conn, uploaded_by, bytes)?;
    stored
        .iter()
        .map(|file| {
            let values = (
                file_uploads::message_id.eq(message_id),
                file_uploads::channel_id.eq(channel_id),
                file_uploads::file_name.eq(&file.file_name),
                file_uploads::s3_key.eq(&file.key),
                file_uploads::content_type.eq(Some(&file.content_type)),
                file_uploads::file_size.eq(Some(file.size as i64)),
                // Empty: a direct upload's hash, filled in once computed.
                file_uploads::sha256.eq((!file.sha256.is_empty()).then_some(&file.sha256)),
                file_uploads::uploaded_by.eq(Some(uploaded_by)),
                file_uploads::uploaded_at.eq(uploaded_at),
                file_uploads::is_deleted.eq(false),
            );
            crate::per_backend!(conn, |c| diesel::insert_into(file_uploads::table)
                .values(values)
                .returning(FileUpload::as_returning())
                .get_result(c))
        })
        .collect::<QueryResult<Vec<FileUpload>>>()
        .and_then(|files| {
            // Images wait for their previews in the same transaction that records them: a
            // crash between the two cannot lose one.
            let images: Vec<i32> = files
                .iter()
                .filter(|f| {
                    f.content_type
                        .as_deref()
                        .is_some_and(super::media_jobs::wants_preview)
                })
                .map(|f| f.id)
                .collect();
            super::media_jobs::enqueue(conn, &images)?;
            Ok(files)
        })
}

/// A file by id, deleted or not.
pub fn find(conn: &mut AnyConnection, file_id: i32) -> QueryResult<Option<FileUpload>> {
    file_uploads::table
        .find(file_id)
        .select(FileUpload::as_select())
        .first(conn)
        .optional()
}

/// Records what the preview worker found out about a live file; `false` if the file has
/// been deleted meanwhile.
pub fn set_preview(
    conn: &mut AnyConnection,
    file_id: i32,
    width: i32,
    height: i32,
    thumbnail_key: &str,
    preview: &str,
) -> QueryResult<bool> {
    let updated = diesel::update(
        file_uploads::table
            .filter(file_uploads::id.eq(file_id))
            .filter(file_uploads::is_deleted.eq(false)),
    )
    .set((
        file_uploads::width.eq(Some(width)),
        file_uploads::height.eq(Some(height)),
        file_uploads::thumbnail_key.eq(Some(thumbnail_key)),
        file_uploads::preview.eq(Some(preview)),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// A file that is not deleted, in a channel `user_id` belongs to; `NotFound` otherwise.
pub fn find_visible(
    conn: &mut AnyConnection,
    file_id: i32,
    user_id: i32,
) -> QueryResult<FileUpload> {
    file_uploads::table
        .filter(file_uploads::id.eq(file_id))
        .filter(file_uploads::is_deleted.eq(false))
        .filter(diesel::dsl::exists(
            channel_members::table
                .filter(channel_members::channel_id.eq(file_uploads::channel_id))
                .filter(channel_members::user_id.eq(user_id)),
        ))
        .select(FileUpload::as_select())
        .first(conn)
}

/// The attachments of these messages that are not deleted, in upload order, by message id.
pub fn live_for_messages(
    conn: &mut AnyConnection,
    message_ids: &[i32],
) -> QueryResult<HashMap<i32, Vec<FileUpload>>> {
    let mut by_message: HashMap<i32, Vec<FileUpload>> = HashMap::new();
    if message_ids.is_empty() {
        return Ok(by_message);
    }
    // Deleted files are left out here rather than in SQL: with `is_deleted = ?` SQLite
    // walks `idx_file_uploads_deleted` over every live file of the deployment instead of
    // `idx_file_uploads_message_id` over these messages' files.
    let files: Vec<FileUpload> = file_uploads::table
        .filter(file_uploads::message_id.eq_any(message_ids))
        .order(file_uploads::id.asc())
        .select(FileUpload::as_select())
        .load(conn)?;
    for file in files.into_iter().filter(|f| !f.is_deleted) {
        by_message.entry(file.message_id).or_default().push(file);
    }
    Ok(by_message)
}

/// Live files uploaded before `cutoff`, in `channel_id` if given, oldest id first:
/// `(id, message_id, channel_id)`, at most `limit`.
pub fn past_retention(
    conn: &mut AnyConnection,
    channel_id: Option<i32>,
    cutoff: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<(i32, i32, i32)>> {
    let mut query = file_uploads::table
        .filter(file_uploads::is_deleted.eq(false))
        .filter(file_uploads::uploaded_at.lt(cutoff))
        .select((
            file_uploads::id,
            file_uploads::message_id,
            file_uploads::channel_id,
        ))
        .order(file_uploads::id)
        .limit(limit)
        .into_boxed();
    if let Some(channel_id) = channel_id {
        query = query.filter(file_uploads::channel_id.eq(channel_id));
    }
    query.load(conn)
}

/// Marks a file deleted (its object is purged later) and gives its bytes back to its
/// uploader's quota; `false` if it was deleted already.
pub fn soft_delete(conn: &mut AnyConnection, file_id: i32) -> QueryResult<bool> {
    let mark = diesel::update(
        file_uploads::table
            .filter(file_uploads::id.eq(file_id))
            .filter(file_uploads::is_deleted.eq(false)),
    )
    .set((
        file_uploads::is_deleted.eq(true),
        file_uploads::deleted_at.eq(Some(now())),
    ))
    .returning((file_uploads::uploaded_by, file_uploads::file_size));
    let marked: Option<(Option<i32>, Option<i64>)> =
        crate::per_backend!(conn, |c| mark.get_result(c).optional())?;
    match marked {
        Some((uploaded_by, size)) => {
            if let (Some(user_id), Some(bytes)) = (uploaded_by, size) {
                super::quota::add_used(conn, user_id, -bytes)?;
            }
            Ok(true)
        }
        None => Ok(false),
    }
}

pub fn record_download(conn: &mut AnyConnection, file_id: i32) -> QueryResult<()> {
    diesel::update(file_uploads::table.find(file_id))
        .set((
            file_uploads::download_count.eq(file_uploads::download_count + 1),
            file_uploads::last_downloaded_at.eq(Some(now())),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Deleted rows whose objects are still stored and whose grace period has passed:
/// `(id, key, thumbnail key)`.
pub fn due_for_purge(
    conn: &mut AnyConnection,
    deleted_before: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<(i32, String, Option<String>)>> {
    file_uploads::table
        .filter(file_uploads::is_deleted.eq(true))
        .filter(file_uploads::purged_at.is_null())
        .filter(file_uploads::deleted_at.lt(deleted_before))
        .order(file_uploads::id.asc())
        .limit(limit)
        .select((
            file_uploads::id,
            file_uploads::s3_key,
            file_uploads::thumbnail_key,
        ))
        .load(conn)
}

/// Claims a row for purging, so concurrent sweepers on other instances skip it.
pub fn claim_purge(conn: &mut AnyConnection, file_id: i32) -> QueryResult<bool> {
    let claimed = diesel::update(
        file_uploads::table
            .filter(file_uploads::id.eq(file_id))
            .filter(file_uploads::purged_at.is_null()),
    )
    .set(file_uploads::purged_at.eq(Some(now())))
    .execute(conn)?;
    Ok(claimed == 1)
}

/// Gives a claim back when the object could not be deleted, to retry on the next sweep.
pub fn release_purge(conn: &mut AnyConnection, file_id: i32) -> QueryResult<()> {
    diesel::update(file_uploads::table.find(file_id))
        .set(file_uploads::purged_at.eq(None::<NaiveDateTime>))
        .execute(conn)
        .map(|_| ())
}

/// Which of these object keys have a row (deleted or not), as its object or its thumbnail.
pub fn known_keys(conn: &mut AnyConnection, keys: &[String]) -> QueryResult<HashSet<String>> {
    let mut known = HashSet::new();
    for chunk in keys.chunks(500) {
        let found: Vec<String> = file_uploads::table
            .filter(file_uploads::s3_key.eq_any(chunk))
            .select(file_uploads::s3_key)
            .load(conn)?;
        known.extend(found);
        let thumbnails: Vec<Option<String>> = file_uploads::table
            .filter(file_uploads::thumbnail_key.eq_any(chunk))
            .select(file_uploads::thumbnail_key)
            .load(conn)?;
        known.extend(thumbnails.into_iter().flatten());
    }
    Ok(known)
}

/// Rows whose object should exist: not purged. `(id, key)`.
pub fn expected_objects(conn: &mut AnyConnection) -> QueryResult<Vec<(i32, String)>> {
    file_uploads::table
        .filter(file_uploads::purged_at.is_null())
        .select((file_uploads::id, file_uploads::s3_key))
        .load(conn)
}

#[derive(QueryableByName)]
struct Totals {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    bytes: i64,
}

/// Files not deleted: how many, and their bytes.
pub fn live_totals(conn: &mut AnyConnection) -> QueryResult<(i64, i64)> {
    // Raw SQL: SUM(BIGINT) is NUMERIC on PostgreSQL, so cast it back for both backends.
    let totals: Totals = diesel::sql_query(
        "SELECT COUNT(*) AS count, CAST(COALESCE(SUM(file_size), 0) AS BIGINT) AS bytes \
         FROM file_uploads WHERE is_deleted = FALSE",
    )
    .get_result(conn)?;
    Ok((totals.count, totals.bytes))
}

/// What `verify` needs of a row.
#[derive(Debug, Clone, QueryableByName)]
#[diesel(table_name = file_uploads)]
pub struct KeyedRow {
    pub id: i32,
    pub s3_key: String,
    pub file_size: Option<i64>,
    pub sha256: Option<String>,
    pub is_deleted: bool,
    pub deleted_at: Option<NaiveDateTime>,
}

const KEYED_COLUMNS: &str = "id, s3_key, file_size, sha256, is_deleted, deleted_at";

/// Up to `limit` rows (deleted or not) whose key comes after `after`, in the byte order of
/// the keys: the order S3 lists objects in. Keyset paging, so each page is one index range
/// scan. PostgreSQL compares text by the database's collation unless told otherwise
/// (`en_US` puts `a/b` after `a.c` and ignores punctuation at first), hence `COLLATE "C"`,
/// which `idx_file_uploads_s3_key_bytes` serves; SQLite's default `BINARY` collation is
/// already byte order, served by the key's unique index.
pub fn rows_after(conn: &mut AnyConnection, after: &str, limit: i64) -> QueryResult<Vec<KeyedRow>> {
    use diesel::sql_types::{BigInt, Text};
    match conn {
        AnyConnection::Postgresql(c) => diesel::sql_query(format!(
            r#"SELECT {KEYED_COLUMNS} FROM file_uploads WHERE s3_key COLLATE "C" > $1
               ORDER BY s3_key COLLATE "C" LIMIT $2"#
        ))
        .bind::<Text, _>(after)
        .bind::<BigInt, _>(limit)
        .load(c),
        AnyConnection::Sqlite(c) => diesel::sql_query(format!(
            "SELECT {KEYED_COLUMNS} FROM file_uploads WHERE s3_key > ? ORDER BY s3_key LIMIT ?"
        ))
        .bind::<Text, _>(after)
        .bind::<BigInt, _>(limit)
        .load(c),
    }
}

/// The row of one key, if there is one now.
pub fn row_of_key(conn: &mut AnyConnection, key: &str) -> QueryResult<Option<KeyedRow>> {
    use diesel::sql_types::Text;
    let placeholder = match conn {
        AnyConnection::Postgresql(_) => "$1",
        AnyConnection::Sqlite(_) => "?",
    };
    let query = diesel::sql_query(format!(
        "SELECT {KEYED_COLUMNS} FROM file_uploads WHERE s3_key = {placeholder}"
    ))
    .bind::<Text, _>(key);
    crate::per_backend!(conn, |c| query.clone().load::<KeyedRow>(c))
        .map(|rows| rows.into_iter().next())
}

/// Runs `read` in one read-only transaction that sees one snapshot of the database
/// (PostgreSQL's default isolation gives each statement its own; SQLite's read transaction
/// is one snapshot already).
pub fn in_one_snapshot<T>(
    conn: &mut AnyConnection,
    read: impl FnOnce(&mut AnyConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    use diesel::connection::SimpleConnection;
    conn.transaction(|conn| {
        if let AnyConnection::Postgresql(c) = conn {
            c.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        }
        read(conn)
    })
}

/// How many of the largest entries each breakdown of the storage report lists.
pub const REPORT_TOP: i64 = 20;

/// Live files' bytes and count by uploader.
#[derive(Debug, Clone, QueryableByName, serde::Serialize, utoipa::ToSchema)]
pub struct UsageByUser {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub id: i32,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub username: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub bytes: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub files: i64,
}

/// Live files' bytes and count by channel.
#[derive(Debug, Clone, QueryableByName, serde::Serialize, utoipa::ToSchema)]
pub struct UsageByChannel {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub id: i32,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub name: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub bytes: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub files: i64,
}

/// Live files' bytes and count by content type (`null`: not recorded).
#[derive(Debug, Clone, QueryableByName, serde::Serialize, utoipa::ToSchema)]
pub struct UsageByType {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub content_type: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub bytes: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub files: i64,
}

// The breakdowns: GROUP BY in the database, largest first (ties by id or type, so the
// order is stable), `REPORT_TOP` of each. SUM(BIGINT) is NUMERIC on PostgreSQL: cast back.
const BYTES: &str = "CAST(COALESCE(SUM(f.file_size), 0) AS BIGINT)";

pub fn usage_by_user(conn: &mut AnyConnection) -> QueryResult<Vec<UsageByUser>> {
    diesel::sql_query(format!(
        "SELECT u.id AS id, u.username AS username, {BYTES} AS bytes, COUNT(*) AS files \
         FROM file_uploads f JOIN users u ON u.id = f.uploaded_by \
         WHERE f.is_deleted = FALSE GROUP BY u.id, u.username \
         ORDER BY bytes DESC, id ASC LIMIT {REPORT_TOP}"
    ))
    .load(conn)
}

pub fn usage_by_channel(conn: &mut AnyConnection) -> QueryResult<Vec<UsageByChannel>> {
    diesel::sql_query(format!(
        "SELECT c.id AS id, c.name AS name, {BYTES} AS bytes, COUNT(*) AS files \
         FROM file_uploads f JOIN channels c ON c.id = f.channel_id \
         WHERE f.is_deleted = FALSE GROUP BY c.id, c.name \
         ORDER BY bytes DESC, id ASC LIMIT {REPORT_TOP}"
    ))
    .load(conn)
}

pub fn usage_by_type(conn: &mut AnyConnection) -> QueryResult<Vec<UsageByType>> {
    diesel::sql_query(format!(
        "SELECT f.content_type AS content_type, {BYTES} AS bytes, COUNT(*) AS files \
         FROM file_uploads f WHERE f.is_deleted = FALSE GROUP BY f.content_type \
         ORDER BY bytes DESC, content_type ASC LIMIT {REPORT_TOP}"
    ))
    .load(conn)
}
