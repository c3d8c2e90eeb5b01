//! The files of one channel, newest first, for the channel's "Files" panel.

use diesel::prelude::*;

use super::AnyConnection;
use super::models::FileUpload;
use super::schema::file_uploads;

/// Live files of `channel_id` with an id below `before` (all if `None`), newest first: at
/// most `limit`, and whether more remain. Keyset paging on the id: an index range scan on
/// `(channel_id, id)`, however deep the page. The caller checks membership.
pub fn page(
    conn: &mut AnyConnection,
    channel_id: i32,
    before: Option<i32>,
    limit: i64,
) -> QueryResult<(Vec<FileUpload>, bool)> {
    let mut query = file_uploads::table
        .filter(file_uploads::channel_id.eq(channel_id))
        .filter(file_uploads::is_deleted.eq(false))
        .order(file_uploads::id.desc())
        .limit(limit + 1)
        .select(FileUpload::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(file_uploads::id.lt(before));
    }
    let mut files: Vec<FileUpload> = query.load(conn)?;
    let has_more = files.len() as i64 > limit;
    files.truncate(limit as usize);
    Ok((files, has_more))
}
