//! Read state: how far each member has read each channel (`channel_members.last_read_id`),
//! and the unread and mention counts that follow from it.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer};

use super::schema::{channel_members, messages};
use super::{AnyConnection, placeholders};

/// Moves the member's read position forward to `message_id`, never back. The message must
/// be one of the channel's (a deleted one too: it may have been read before it went);
/// `NotFound` otherwise. Returns the position now, and whether it moved.
pub fn mark_read(
    conn: &mut AnyConnection,
    channel_id: i32,
    user_id: i32,
    message_id: i32,
) -> QueryResult<(i32, bool)> {
    let in_channel: bool = diesel::select(diesel::dsl::exists(
        messages::table
            .filter(messages::id.eq(message_id))
            .filter(messages::channel_id.eq(channel_id)),
    ))
    .get_result(conn)?;
    if !in_channel {
        return Err(diesel::result::Error::NotFound);
    }
    let member = channel_members::table
        .filter(channel_members::channel_id.eq(channel_id))
        .filter(channel_members::user_id.eq(user_id));
    // The condition makes it monotonic whatever the order of concurrent requests.
    let moved = diesel::update(member.filter(channel_members::last_read_id.lt(message_id)))
        .set(channel_members::last_read_id.eq(message_id))
        .execute(conn)?;
    let now: i32 = member.select(channel_members::last_read_id).first(conn)?;
    Ok((now, moved > 0))
}

/// A member's read state in one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadState {
    pub last_read_id: i32,
    /// Live messages (replies included) after `last_read_id`, not the member's own.
    pub unread_count: i64,
    /// Of those, the ones that mention the member.
    pub mention_count: i64,
    /// A direct message the member hid (`POST /api/dms/{id}/hide`).
    pub hidden: bool,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Integer)]
    channel_id: i32,
    #[diesel(sql_type = Integer)]
    last_read_id: i32,
    #[diesel(sql_type = BigInt)]
    unread_count: i64,
    #[diesel(sql_type = BigInt)]
    mention_count: i64,
    #[diesel(sql_type = Bool)]
    hidden: bool,
}

/// The read state of every channel of the user (and whether they hid it), by channel id:
/// one query. Each count is a
/// range of an index, from the member's position to the end: unread messages on
/// `idx_messages_channel_read (channel_id, id, user_id, deleted_at)`, which answers the
/// count without visiting the messages, mentions on `idx_message_mentions_user
/// (user_id, channel_id, message_id)` (a deleted message's mentions are removed with it).
/// Their cost grows with what is unread, not with the history.
pub fn for_user(conn: &mut AnyConnection, user_id: i32) -> QueryResult<HashMap<i32, ReadState>> {
    let sql = placeholders(
        conn,
        "SELECT cm.channel_id AS channel_id, cm.last_read_id AS last_read_id, \
           (SELECT COUNT(*) FROM messages m \
             WHERE m.channel_id = cm.channel_id AND m.id > cm.last_read_id \
               AND m.deleted_at IS NULL AND m.user_id <> cm.user_id) AS unread_count, \
           (SELECT COUNT(*) FROM message_mentions mm \
             WHERE mm.user_id = cm.user_id AND mm.channel_id = cm.channel_id \
               AND mm.message_id > cm.last_read_id) AS mention_count, \
           cm.hidden AS hidden \
         FROM channel_members cm WHERE cm.user_id = ?",
    );
    let rows: Vec<Row> = crate::per_backend!(conn, |c| diesel::sql_query(&sql)
        .bind::<Integer, _>(user_id)
        .load(c))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let state = ReadState {
                last_read_id: r.last_read_id,
                unread_count: r.unread_count,
                mention_count: r.mention_count,
                hidden: r.hidden,
            };
            (r.channel_id, state)
        })
        .collect())
}
