use std::collections::HashMap;

use diesel::prelude::*;

use super::AnyConnection;
use super::models::FileUpload;
use super::schema::file_uploads;

/// The attachments of these messages that are not deleted, in upload order, by message id.
pub fn live_for_messages(
    conn: &mut AnyConnection,
    message_ids: &[i32],
) -> QueryResult<HashMap<i32, Vec<FileUpload>>> {
    let mut by_message: HashMap<i32, Vec<FileUpload>> = HashMap::new();
    if message_ids.is_empty() {
        return Ok(by_message);
    }
    let files: Vec<FileUpload> = file_uploads::table
        .filter(file_uploads::message_id.eq_any(message_ids))
        .filter(file_uploads::is_deleted.eq(false))
        .order(file_uploads::id.asc())
        .select(FileUpload::as_select())
        .load(conn)?;
    for file in files {
        by_message.entry(file.message_id).or_default().push(file);
    }
    Ok(by_message)
}
