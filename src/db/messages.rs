use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::{MessageParts, MessageRow, now};
use super::schema::{messages, users};
use super::{AnyConnection, files, mentions, reactions};

/// A window of a channel's history, by message id (both bounds exclusive).
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub before: Option<i32>,
    pub after: Option<i32>,
    pub limit: i64,
}

pub struct Page {
    /// Ascending by id.
    pub messages: Vec<MessageParts>,
    pub has_more: bool,
}

/// Inserts a message (a reply when `thread_id` is given); call inside the transaction that
/// also writes its files, after `allocate_event_seq` has locked the channel.
pub fn insert(
    conn: &mut AnyConnection,
    channel_id: i32,
    user_id: i32,
    content: &str,
    thread_id: Option<i32>,
) -> QueryResult<MessageRow> {
    let values = (
        messages::channel_id.eq(channel_id),
        messages::user_id.eq(user_id),
        messages::content.eq(content),
        messages::created_at.eq(now()),
        messages::thread_id.eq(thread_id),
    );
    crate::per_backend!(conn, |c| diesel::insert_into(messages::table)
        .values(values)
        .returning(MessageRow::as_returning())
        .get_result(c))
}

/// A message that is not deleted; `NotFound` otherwise.
pub fn find(conn: &mut AnyConnection, message_id: i32) -> QueryResult<MessageRow> {
    messages::table
        .find(message_id)
        .filter(messages::deleted_at.is_null())
        .select(MessageRow::as_select())
        .first(conn)
}

/// A message of this channel that is not deleted; `NotFound` otherwise.
pub fn find_in_channel(
    conn: &mut AnyConnection,
    channel_id: i32,
    message_id: i32,
) -> QueryResult<MessageRow> {
    let row = find(conn, message_id)?;
    if row.channel_id != channel_id {
        return Err(diesel::result::Error::NotFound);
    }
    Ok(row)
}

/// One message with its author, files and reactions (three queries).
pub fn parts(conn: &mut AnyConnection, message_id: i32) -> QueryResult<MessageParts> {
    let row: (MessageRow, String, String) = messages::table
        .inner_join(users::table)
        .filter(messages::id.eq(message_id))
        .select((
            MessageRow::as_select(),
            users::username,
            users::display_name,
        ))
        .first(conn)?;
    Ok(assemble(conn, vec![row])?.remove(0))
}

/// These messages with their authors, files, reactions and mentions, in the order of `ids`
/// (ids of deleted messages included: the caller filtered them).
pub fn parts_many(conn: &mut AnyConnection, ids: &[i32]) -> QueryResult<Vec<MessageParts>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(MessageRow, String, String)> = messages::table
        .inner_join(users::table)
        .filter(messages::id.eq_any(ids))
        .select((
            MessageRow::as_select(),
            users::username,
            users::display_name,
        ))
        .load(conn)?;
    let mut parts = assemble(conn, rows)?;
    parts.sort_by_key(|p| ids.iter().position(|id| *id == p.row.id));
    Ok(parts)
}

/// Rows with their authors' names, completed with their live files and their reactions:
/// one query for all the files and one for all the reactions, however many rows.
fn assemble(
    conn: &mut AnyConnection,
    rows: Vec<(MessageRow, String, String)>,
) -> QueryResult<Vec<MessageParts>> {
    let ids: Vec<i32> = rows.iter().map(|(m, _, _)| m.id).collect();
    let mut files_by_message = files::live_for_messages(conn, &ids)?;
    let mut reactions_by_message = reactions::for_messages(conn, &ids)?;
    // Mentions come only from `@name` in the content (posts and edits rewrite them), so a
    // message without one has none: most pages need no mentions query at all.
    let may_mention: Vec<i32> = rows
        .iter()
        .filter(|(m, _, _)| m.content.contains('@'))
        .map(|(m, _, _)| m.id)
        .collect();
    let mut mentions_by_message = mentions::for_messages(conn, &may_mention)?;
    Ok(rows
        .into_iter()
        .map(|(row, username, display_name)| MessageParts {
            files: files_by_message.remove(&row.id).unwrap_or_default(),
            reactions: reactions_by_message.remove(&row.id).unwrap_or_default(),
            mentions: mentions_by_message.remove(&row.id).unwrap_or_default(),
            row,
            username,
            display_name,
        })
        .collect())
}

/// One page of a channel's top-level messages (replies are read by thread).
///
/// With `after`, the page starts just after it and `has_more` says newer messages remain;
/// otherwise the page ends just before `before` (or at the newest message) and `has_more`
/// says older ones remain. Files and reactions for the whole page come in one query each.
pub fn page(conn: &mut AnyConnection, channel_id: i32, request: PageRequest) -> QueryResult<Page> {
    let mut query = messages::table
        .inner_join(users::table)
        .filter(messages::channel_id.eq(channel_id))
        .filter(messages::thread_id.is_null())
        .filter(messages::deleted_at.is_null())
        .select((
            MessageRow::as_select(),
            users::username,
            users::display_name,
        ))
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
    let mut rows: Vec<(MessageRow, String, String)> = query.load(conn)?;
    let has_more = rows.len() as i64 > request.limit;
    rows.truncate(request.limit as usize);
    if !forward {
        rows.reverse();
    }
    Ok(Page {
        messages: assemble(conn, rows)?,
        has_more,
    })
}

/// The page of `limit` top-level messages centred on `message_id` (a reply: on its thread's
/// root), ascending: about half of them older than it, it, then newer ones; when one side
/// runs short the other fills the page. `NotFound` unless the message is a live one of the
/// channel. Returns the page (`has_more`: older ones remain) and whether newer remain.
pub fn around(
    conn: &mut AnyConnection,
    channel_id: i32,
    message_id: i32,
    limit: i64,
) -> QueryResult<(Page, bool)> {
    let target = find_in_channel(conn, channel_id, message_id)?;
    let centre = target.thread_id.unwrap_or(target.id);
    let window = |before, after| PageRequest {
        before,
        after,
        limit,
    };
    // Each side as far as a whole page could reach; the window is cut from them.
    let mut older = page(conn, channel_id, window(Some(centre + 1), None))?;
    let mut newer = page(conn, channel_id, window(None, Some(centre)))?;
    let (older_count, newer_count) = (older.messages.len(), newer.messages.len());
    let limit = limit as usize;
    let mut want_newer = (limit - 1) / 2;
    let mut want_older = limit - want_newer;
    if newer_count < want_newer {
        want_older += want_newer - newer_count;
        want_newer = newer_count;
    }
    if older_count < want_older {
        want_newer = (want_newer + want_older - older_count).min(newer_count);
        want_older = older_count;
    }
    let has_older = older.has_more || older_count > want_older;
    let has_newer = newer.has_more || newer_count > want_newer;
    // `older` is ascending and ends with the centre: keep its end.
    let mut messages = older.messages.split_off(older_count - want_older);
    newer.messages.truncate(want_newer);
    messages.extend(newer.messages);
    let page = Page {
        messages,
        has_more: has_older,
    };
    Ok((page, has_newer))
}

/// The live replies of a top-level message after `after`, oldest first; `has_more` says
/// newer ones remain.
pub fn thread_page(
    conn: &mut AnyConnection,
    root_id: i32,
    after: Option<i32>,
    limit: i64,
) -> QueryResult<Page> {
    let mut rows: Vec<(MessageRow, String, String)> = messages::table
        .inner_join(users::table)
        .filter(messages::thread_id.eq(root_id))
        .filter(messages::deleted_at.is_null())
        .filter(messages::id.gt(after.unwrap_or(0)))
        .order(messages::id.asc())
        .limit(limit + 1)
        .select((
            MessageRow::as_select(),
            users::username,
            users::display_name,
        ))
        .load(conn)?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(Page {
        messages: assemble(conn, rows)?,
        has_more,
    })
}

/// Replaces the content and sets `edited_at`.
pub fn edit(conn: &mut AnyConnection, message_id: i32, content: &str) -> QueryResult<()> {
    diesel::update(messages::table.find(message_id))
        .set((
            messages::content.eq(content),
            messages::edited_at.eq(Some(now())),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The ids of a top-level message's live replies, oldest first.
pub fn live_replies(conn: &mut AnyConnection, root_id: i32) -> QueryResult<Vec<i32>> {
    messages::table
        .filter(messages::thread_id.eq(root_id))
        .filter(messages::deleted_at.is_null())
        .order(messages::id.asc())
        .select(messages::id)
        .load(conn)
}

/// Marks these messages deleted.
pub fn soft_delete(conn: &mut AnyConnection, message_ids: &[i32]) -> QueryResult<()> {
    diesel::update(
        messages::table
            .filter(messages::id.eq_any(message_ids))
            .filter(messages::deleted_at.is_null()),
    )
    .set(messages::deleted_at.eq(Some(now())))
    .execute(conn)?;
    // A deleted message mentions nobody any more (nor counts as an unread mention).
    mentions::remove_for_messages(conn, message_ids)
}

/// Counts a new reply posted at `at` on its top-level message.
pub fn count_reply(conn: &mut AnyConnection, root_id: i32, at: NaiveDateTime) -> QueryResult<()> {
    diesel::update(messages::table.find(root_id))
        .set((
            messages::reply_count.eq(messages::reply_count + 1),
            messages::last_reply_at.eq(Some(at)),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Counts a top-level message's live replies again (after one was deleted).
pub fn recount_replies(conn: &mut AnyConnection, root_id: i32) -> QueryResult<()> {
    let (count, last): (i64, Option<NaiveDateTime>) = messages::table
        .filter(messages::thread_id.eq(root_id))
        .filter(messages::deleted_at.is_null())
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::max(messages::created_at),
        ))
        .first(conn)?;
    diesel::update(messages::table.find(root_id))
        .set((
            messages::reply_count.eq(count as i32),
            messages::last_reply_at.eq(last),
        ))
        .execute(conn)
        .map(|_| ())
}
