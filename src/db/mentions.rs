//! Who a message mentions: `message_mentions`, written by the chat core when a message is
//! posted or edited, and removed with it.

use std::collections::HashMap;

use diesel::prelude::*;

use super::AnyConnection;
use super::schema::{channel_members, message_mentions, users};

/// The word after `@` that mentions every member of the channel.
pub const EVERYONE: &str = "channel";

/// The names after `@` in `content`, lowercased, without repeats: an `@` that starts the
/// text or follows a character that cannot be in a username (so `me@example.com` mentions
/// nobody), then the username characters (a-z, 0-9, `_`, `.`, `-`). A name ending in `.`
/// or `-` is also tried without them (`@bob.` at the end of a sentence).
pub fn names_in(content: &str) -> Vec<String> {
    fn name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
    }
    let mut names: Vec<String> = Vec::new();
    let mut push = |name: String| {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    };
    let chars: Vec<char> = content.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' && (i == 0 || !name_char(chars[i - 1])) {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && name_char(chars[end]) && end - start < 64 {
                end += 1;
            }
            let name: String = chars[start..end].iter().collect::<String>().to_lowercase();
            let trimmed = name.trim_end_matches(['.', '-']).to_owned();
            if trimmed != name {
                push(trimmed);
            }
            push(name);
            i = end.max(start);
        } else {
            i += 1;
        }
    }
    names
}

/// Whether the content mentions everyone (`@channel`).
pub fn mentions_everyone(content: &str) -> bool {
    names_in(content).iter().any(|n| n == EVERYONE)
}

/// The members of the channel that `content` mentions, by id, never its author: everyone
/// for `@channel`, else the members named.
pub fn resolve(
    conn: &mut AnyConnection,
    channel_id: i32,
    author_id: i32,
    content: &str,
) -> QueryResult<Vec<i32>> {
    let names = names_in(content);
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = users::table
        .inner_join(channel_members::table)
        .filter(channel_members::channel_id.eq(channel_id))
        .filter(users::id.ne(author_id))
        .select(users::id)
        .order(users::id.asc())
        .into_boxed();
    if !names.iter().any(|n| n == EVERYONE) {
        query = query.filter(users::username.eq_any(names));
    }
    query.load(conn)
}

/// Replaces the mentions of a message.
pub fn set(
    conn: &mut AnyConnection,
    message_id: i32,
    channel_id: i32,
    user_ids: &[i32],
) -> QueryResult<()> {
    diesel::delete(message_mentions::table.filter(message_mentions::message_id.eq(message_id)))
        .execute(conn)?;
    if user_ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = user_ids
        .iter()
        .map(|user_id| {
            (
                message_mentions::message_id.eq(message_id),
                message_mentions::user_id.eq(*user_id),
                message_mentions::channel_id.eq(channel_id),
            )
        })
        .collect();
    crate::per_backend!(conn, |c| diesel::insert_into(message_mentions::table)
        .values(rows)
        .execute(c))
    .map(|_| ())
}

/// Forgets the mentions of these messages (they were deleted).
pub fn remove_for_messages(conn: &mut AnyConnection, message_ids: &[i32]) -> QueryResult<()> {
    if message_ids.is_empty() {
        return Ok(());
    }
    diesel::delete(message_mentions::table.filter(message_mentions::message_id.eq_any(message_ids)))
        .execute(conn)
        .map(|_| ())
}

/// The mentioned user ids of these messages, ascending, by message id.
pub fn for_messages(
    conn: &mut AnyConnection,
    message_ids: &[i32],
) -> QueryResult<HashMap<i32, Vec<i32>>> {
    let mut by_message: HashMap<i32, Vec<i32>> = HashMap::new();
    if message_ids.is_empty() {
        return Ok(by_message);
    }
    let rows: Vec<(i32, i32)> = message_mentions::table
        .filter(message_mentions::message_id.eq_any(message_ids))
        .order((message_mentions::message_id, message_mentions::user_id))
        .select((message_mentions::message_id, message_mentions::user_id))
        .load(conn)?;
    for (message_id, user_id) in rows {
        by_message.entry(message_id).or_default().push(user_id);
    }
    Ok(by_message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_an_at_sign_that_starts_a_word() {
        assert_eq!(names_in("hi @Bob and @carol."), ["bob", "carol", "carol."]);
        assert_eq!(names_in("mail me@example.com"), Vec::<String>::new());
        assert_eq!(names_in("@channel @channel"), ["channel"]);
        assert_eq!(names_in("@ alone, @@x"), ["x"]);
        assert!(mentions_everyone("heads up @channel!"));
        assert!(!mentions_everyone("#channel"));
    }
}
