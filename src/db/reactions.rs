use std::collections::HashMap;

use diesel::prelude::*;

use super::AnyConnection;
use super::models::{ReactionSummary, now};
use super::schema::message_reactions;

/// The reactions of these messages, summarised per emoji (in the order each emoji was
/// first used, users in the order they reacted), by message id: one query.
pub fn for_messages(
    conn: &mut AnyConnection,
    message_ids: &[i32],
) -> QueryResult<HashMap<i32, Vec<ReactionSummary>>> {
    let mut by_message: HashMap<i32, Vec<ReactionSummary>> = HashMap::new();
    if message_ids.is_empty() {
        return Ok(by_message);
    }
    let rows: Vec<(i32, String, i32)> = message_reactions::table
        .filter(message_reactions::message_id.eq_any(message_ids))
        .order(message_reactions::id.asc())
        .select((
            message_reactions::message_id,
            message_reactions::emoji,
            message_reactions::user_id,
        ))
        .load(conn)?;
    for (message_id, emoji, user_id) in rows {
        let summaries = by_message.entry(message_id).or_default();
        match summaries.iter_mut().find(|s| s.emoji == emoji) {
            Some(summary) => {
                summary.count += 1;
                summary.user_ids.push(user_id);
            }
            None => summaries.push(ReactionSummary {
                emoji,
                count: 1,
                user_ids: vec![user_id],
            }),
        }
    }
    Ok(by_message)
}

/// Whether this user already reacted with this emoji.
pub fn exists(
    conn: &mut AnyConnection,
    message_id: i32,
    user_id: i32,
    emoji: &str,
) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        message_reactions::table
            .filter(message_reactions::message_id.eq(message_id))
            .filter(message_reactions::emoji.eq(emoji))
            .filter(message_reactions::user_id.eq(user_id)),
    ))
    .get_result(conn)
}

/// The distinct emoji on a message.
pub fn emoji_of(conn: &mut AnyConnection, message_id: i32) -> QueryResult<Vec<String>> {
    message_reactions::table
        .filter(message_reactions::message_id.eq(message_id))
        .select(message_reactions::emoji)
        .distinct()
        .load(conn)
}

pub fn insert(
    conn: &mut AnyConnection,
    message_id: i32,
    user_id: i32,
    emoji: &str,
) -> QueryResult<()> {
    diesel::insert_into(message_reactions::table)
        .values((
            message_reactions::message_id.eq(message_id),
            message_reactions::user_id.eq(user_id),
            message_reactions::emoji.eq(emoji),
            message_reactions::created_at.eq(now()),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Removes a reaction; `Ok(false)` when there was none.
pub fn delete(
    conn: &mut AnyConnection,
    message_id: i32,
    user_id: i32,
    emoji: &str,
) -> QueryResult<bool> {
    let removed = diesel::delete(
        message_reactions::table
            .filter(message_reactions::message_id.eq(message_id))
            .filter(message_reactions::emoji.eq(emoji))
            .filter(message_reactions::user_id.eq(user_id)),
    )
    .execute(conn)?;
    Ok(removed > 0)
}
