use diesel::prelude::*;

use super::models::{FileUpload, MessageRow, now};
use super::schema::{messages, users};
use super::{AnyConnection, files};

/// A window of a channel's history, by message id (both bounds exclusive).
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub before: Option<i32>,
    pub after: Option<i32>,
    pub limit: i64,
}

/// A message row with its author's username and its live attachments.
pub type MessageParts = (MessageRow, String, Vec<FileUpload>);

pub struct Page {
    /// Ascending by id.
    pub messages: Vec<MessageParts>,
    pub has_more: bool,
}

/// Inserts a message; call inside the transaction that also writes its files, after
/// `allocate_event_seq` has locked the channel.
pub fn insert(
    conn: &mut AnyConnection,
    channel_id: i32,
    user_id: i32,
    content: &str,
) -> QueryResult<MessageRow> {
    let values = (
        messages::channel_id.eq(channel_id),
        messages::user_id.eq(user_id),
        messages::content.eq(content),
        messages::created_at.eq(now()),
    );
    crate::per_backend!(conn, |c| diesel::insert_into(messages::table)
        .values(values)
        .returning(MessageRow::as_returning())
        .get_result(c))
}

pub fn find(conn: &mut AnyConnection, message_id: i32) -> QueryResult<MessageRow> {
    messages::table
        .find(message_id)
        .select(MessageRow::as_select())
        .first(conn)
}

/// One page of a channel's messages.
///
/// With `after`, the page starts just after it and `has_more` says newer messages remain;
/// otherwise the page ends just before `before` (or at the newest message) and `has_more`
/// says older ones remain. Files for the whole page come in one query.
pub fn page(conn: &mut AnyConnection, channel_id: i32, request: PageRequest) -> QueryResult<Page> {
    let mut query = messages::table
        .inner_join(users::table)
        .filter(messages::channel_id.eq(channel_id))
        .select((MessageRow::as_select(), users::username))
        .limit(request.limit + 1)
        .into_boxed();
    if let Some(before) = request.before {
        query = query.filter(messages::id.lt(before));
    }
    if let Some(after) = request.after {
        query = query.filter(messages::id.gt(after));
    }
    let forward = request.after.is_some();
    query = if forward {
        query.order(messages::id.asc())
    } else {
        query.order(messages::id.desc())
    };
    let mut rows: Vec<(MessageRow, String)> = query.load(conn)?;
    let has_more = rows.len() as i64 > request.limit;
    rows.truncate(request.limit as usize);
    if !forward {
        rows.reverse();
    }

    let ids: Vec<i32> = rows.iter().map(|(m, _)| m.id).collect();
    let mut files_by_message = files::live_for_messages(conn, &ids)?;
    let messages = rows
        .into_iter()
        .map(|(row, username)| {
            let files = files_by_message.remove(&row.id).unwrap_or_default();
            (row, username, files)
        })
        .collect();
    Ok(Page { messages, has_more })
}
