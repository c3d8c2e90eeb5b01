//! Search of message text and file names, in the channels a user is a member of.
//!
//! A query is cut into terms: runs of letters and digits, lowercased; everything else
//! (quotes, `*`, parentheses, operators, `\`) only separates terms and is never passed to
//! a search engine. Terms shorter than `MIN_TERM_CHARS` are dropped (the trigram indexes
//! cannot serve them); a query left without terms is refused by the caller. Every term
//! must match.
//!
//! - SQLite: FTS5 tables with the trigram tokenizer (`messages_fts`, `files_fts`), kept in
//!   step by triggers. A term matches wherever it occurs in the text, case-insensitively:
//!   `repo` finds `report`, `会議室` finds `今日は会議室で`. Each term is quoted as an
//!   FTS5 string (`"` doubled), so it is only ever a literal.
//! - PostgreSQL: a term matches a message when it begins a word of it (full-text search
//!   over the 'simple' configuration, the term bound through `quote_literal(?) || ':*'`);
//!   a term in a script written without spaces (CJK, Thai) when it occurs anywhere in it
//!   (`ILIKE`, served by the pg_trgm index). File names match by `ILIKE` substrings.
//!
//! Membership is part of the query (a join on `channel_members`), so a channel the user
//! left is never searched; deleted messages and files are never found.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

use super::messages::parts_many;
use super::models::{FileUpload, MessageParts};
use super::schema::file_uploads;
use super::{AnyConnection, placeholders};

pub const MAX_QUERY_CHARS: usize = 256;
pub const MIN_TERM_CHARS: usize = 3;
/// More terms than this are ignored (each is one more condition).
pub const MAX_TERMS: usize = 8;
/// A message has at most this many files: a page may end with all the files of a message.
const MAX_FILES_PER_MESSAGE: i64 = 10;
/// PostgreSQL: the newest messages a search tests one by one before it asks the indexes
/// (see `message_hits`).
const PG_RECENT_MESSAGES: i64 = 2000;
/// PostgreSQL: the most messages a search walks for a term seen in the newest ones.
const PG_WALK_MAX_MESSAGES: i64 = 20_000;

/// The terms of a query: runs of letters and digits of at least `MIN_TERM_CHARS`,
/// lowercased, without repeats, at most `MAX_TERMS`.
pub fn terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for run in query.split(|c: char| !c.is_alphanumeric()) {
        let term = run.to_lowercase();
        if term.chars().count() >= MIN_TERM_CHARS && !terms.contains(&term) {
            terms.push(term);
        }
    }
    terms.truncate(MAX_TERMS);
    terms
}

/// Scripts written without spaces between words: a term in one is looked for anywhere.
fn unspaced(term: &str) -> bool {
    term.chars().any(|c| {
        matches!(c as u32,
            0x0E00..=0x0EFF       // Thai, Lao
            | 0x1780..=0x17FF     // Khmer
            | 0x3040..=0x30FF     // Hiragana, Katakana
            | 0x3400..=0x4DBF     // CJK extension A
            | 0x4E00..=0x9FFF     // CJK unified ideographs
            | 0xF900..=0xFAFF     // CJK compatibility ideographs
            | 0xFF66..=0xFF9F     // half-width Katakana
            | 0x20000..=0x3FFFF) // CJK extensions B and on
    })
}

/// `term` as an FTS5 string literal.
fn fts5_string(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// The FTS5 `MATCH` expression for every term at once: each a string literal, so nothing a
/// user typed is read as FTS5 syntax.
fn fts5_all_of(terms: &[String]) -> String {
    let literals: Vec<String> = terms.iter().map(|t| fts5_string(t)).collect();
    literals.join(" AND ")
}

/// `%term%` for LIKE, its wildcards and escape character escaped (`\`, the default).
fn like_anywhere(term: &str) -> String {
    let mut pattern = String::from("%");
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub user_id: i32,
    /// From `terms`; not empty.
    pub terms: Vec<String>,
    pub channel_id: Option<i32>,
    /// Only what belongs to messages older than this message id.
    pub before: Option<i32>,
    pub limit: i64,
}

/// Newest first by message id (a file by its message's id); at most `limit` hits in all,
/// plus the other files of the last message if any.
pub struct SearchPage {
    pub messages: Vec<MessageParts>,
    pub files: Vec<FileUpload>,
    pub has_more: bool,
    /// The `before` of the next page: the smallest message id on this one.
    pub next_before: Option<i32>,
}

#[derive(Clone)]
enum Bind {
    Text(String),
    Int(i32),
    Big(i64),
}

#[derive(QueryableByName)]
struct Hit {
    #[diesel(sql_type = Integer)]
    id: i32,
    #[diesel(sql_type = Integer)]
    message_id: i32,
}

fn load_hits(conn: &mut AnyConnection, sql: &str, binds: &[Bind]) -> QueryResult<Vec<Hit>> {
    let sql = placeholders(conn, sql);
    crate::per_backend!(conn, |c| {
        let mut query = diesel::sql_query(&sql).into_boxed();
        for bind in binds {
            query = match bind {
                Bind::Text(t) => query.bind::<Text, _>(t.clone()),
                Bind::Int(i) => query.bind::<Integer, _>(*i),
                Bind::Big(i) => query.bind::<BigInt, _>(*i),
            };
        }
        query.load(c)
    })
}

/// `AND ...` for the optional channel and position, with their binds.
fn window(request: &SearchRequest, message_id: &str, sql: &mut String, binds: &mut Vec<Bind>) {
    if let Some(channel_id) = request.channel_id {
        sql.push_str(" AND cm.channel_id = ?");
        binds.push(Bind::Int(channel_id));
    }
    if let Some(before) = request.before {
        sql.push_str(&format!(" AND {message_id} < ?"));
        binds.push(Bind::Int(before));
    }
}

/// Matching live messages, newest first: (id, id).
fn message_hits(
    conn: &mut AnyConnection,
    request: &SearchRequest,
    fetch: i64,
) -> QueryResult<Vec<Hit>> {
    if let AnyConnection::Postgresql(_) = conn {
        return pg_message_hits(conn, request, fetch);
    }
    let mut binds = vec![
        Bind::Text(fts5_all_of(&request.terms)),
        Bind::Int(request.user_id),
    ];
    let mut sql = String::from(
        "SELECT m.id AS id, m.id AS message_id FROM messages_fts \
         JOIN messages m ON m.id = messages_fts.rowid \
         JOIN channel_members cm ON cm.channel_id = m.channel_id \
         WHERE messages_fts MATCH ? AND cm.user_id = ? AND m.deleted_at IS NULL",
    );
    window(request, "m.id", &mut sql, &mut binds);
    // In the FTS table's rowid order, which FTS5 walks backwards itself and stops at the
    // limit, instead of collecting and sorting every match of a common word.
    sql.push_str(" ORDER BY messages_fts.rowid DESC LIMIT ?");
    binds.push(Bind::Big(fetch));
    load_hits(conn, &sql, &binds)
}

/// `message_hits` on PostgreSQL, in up to three queries. The planner cannot tell a common
/// word from a rare one (a prefix query gets a fixed estimate), so with `ORDER BY id LIMIT`
/// it walks the messages newest first testing each: instant for a common word, but a rare
/// one reads the whole history (seconds at a million messages). The walk is therefore
/// bounded to the newest `PG_RECENT_MESSAGES` of the user's messages; when they hold some
/// hits but not a full page, a longer walk sized by that density (at most
/// `PG_WALK_MAX_MESSAGES`); when that fails too, the word is rare, and the last query
/// collects its matches through the GIN indexes (`ORDER BY m.id + 0` keeps the planner from
/// walking) and sorts them.
fn pg_message_hits(
    conn: &mut AnyConnection,
    request: &SearchRequest,
    fetch: i64,
) -> QueryResult<Vec<Hit>> {
    let mut terms_sql = String::new();
    let mut term_binds = Vec::new();
    for term in &request.terms {
        if unspaced(term) {
            terms_sql.push_str(" AND m.content ILIKE ?");
            term_binds.push(Bind::Text(like_anywhere(term)));
        } else {
            // The stored words (`content_words`), which the GIN index covers.
            terms_sql
                .push_str(" AND m.content_words @@ to_tsquery('simple', quote_literal(?) || ':*')");
            term_binds.push(Bind::Text(term.clone()));
        }
    }
    let candidates = |binds: &mut Vec<Bind>| {
        binds.push(Bind::Int(request.user_id));
        let mut sql = String::from(
            "SELECT m.id, m.content, m.content_words FROM messages m \
             JOIN channel_members cm ON cm.channel_id = m.channel_id \
             WHERE cm.user_id = ? AND m.deleted_at IS NULL",
        );
        window(request, "m.id", &mut sql, binds);
        sql
    };

    // The newest `window` messages of the user's channels, tested one by one.
    let walk = |conn: &mut AnyConnection, window: i64| {
        let mut binds = Vec::new();
        let recent = candidates(&mut binds);
        binds.push(Bind::Big(window));
        let sql = format!(
            "SELECT m.id AS id, m.id AS message_id \
             FROM ({recent} ORDER BY m.id DESC LIMIT ?) m WHERE TRUE{terms_sql} \
             ORDER BY m.id DESC LIMIT ?"
        );
        binds.extend(term_binds.iter().map(Bind::clone));
        binds.push(Bind::Big(fetch));
        load_hits(conn, &sql, &binds)
    };
    let hits = walk(conn, PG_RECENT_MESSAGES)?;
    if hits.len() as i64 >= fetch {
        return Ok(hits);
    }
    // Found, but not a page's worth: a term this common (1 message in 160, say) is found
    // sooner by walking as far as its density says a page needs (twice over) than by
    // collecting and sorting its thousands of matches from the index. A rarer one (a walk
    // longer than `PG_WALK_MAX_MESSAGES`) has few enough matches for the index.
    if !hits.is_empty() {
        let window = PG_RECENT_MESSAGES * fetch * 2 / hits.len() as i64;
        if window <= PG_WALK_MAX_MESSAGES {
            let hits = walk(conn, window)?;
            if hits.len() as i64 >= fetch {
                return Ok(hits);
            }
        }
    }

    let mut binds = Vec::new();
    let all = candidates(&mut binds);
    let sql = format!(
        "SELECT m.id AS id, m.id AS message_id FROM ({all}{terms_sql}) m \
         ORDER BY m.id + 0 DESC LIMIT ?"
    );
    binds.extend(term_binds);
    binds.push(Bind::Big(fetch));
    load_hits(conn, &sql, &binds)
}

/// Matching live files, newest first by (message id, id).
fn file_hits(
    conn: &mut AnyConnection,
    request: &SearchRequest,
    fetch: i64,
) -> QueryResult<Vec<Hit>> {
    let mut binds = Vec::new();
    let mut sql = match conn {
        AnyConnection::Sqlite(_) => {
            binds.push(Bind::Text(fts5_all_of(&request.terms)));
            binds.push(Bind::Int(request.user_id));
            String::from(
                "SELECT f.id AS id, f.message_id AS message_id FROM files_fts \
                 JOIN file_uploads f ON f.id = files_fts.rowid \
                 JOIN channel_members cm ON cm.channel_id = f.channel_id \
                 WHERE files_fts MATCH ? AND cm.user_id = ? AND f.is_deleted = FALSE",
            )
        }
        AnyConnection::Postgresql(_) => {
            binds.push(Bind::Int(request.user_id));
            let mut sql = String::from(
                "SELECT f.id AS id, f.message_id AS message_id FROM file_uploads f \
                 JOIN channel_members cm ON cm.channel_id = f.channel_id \
                 WHERE cm.user_id = ? AND f.is_deleted = FALSE",
            );
            for term in &request.terms {
                sql.push_str(" AND f.file_name ILIKE ?");
                binds.push(Bind::Text(like_anywhere(term)));
            }
            sql
        }
    };
    window(request, "f.message_id", &mut sql, &mut binds);
    sql.push_str(" ORDER BY f.message_id DESC, f.id DESC LIMIT ?");
    binds.push(Bind::Big(fetch));
    load_hits(conn, &sql, &binds)
}

/// One page of hits: messages and files merged newest first by message id, `limit` in all;
/// a page never ends between two hits of the same message, so `next_before` (the smallest
/// message id on it) neither repeats nor skips anything.
pub fn search(conn: &mut AnyConnection, request: &SearchRequest) -> QueryResult<SearchPage> {
    let limit = request.limit;
    let messages = message_hits(conn, request, limit + 1)?;
    let files = file_hits(conn, request, limit + MAX_FILES_PER_MESSAGE + 1)?;
    // (message id, is a file, id), newest first.
    let mut merged: Vec<(i32, bool, i32)> = messages
        .iter()
        .map(|h| (h.message_id, false, h.id))
        .chain(files.iter().map(|h| (h.message_id, true, h.id)))
        .collect();
    merged.sort_by(|a, b| b.cmp(a));
    let mut take = merged.len().min(limit as usize);
    if take > 0 {
        let last = merged[take - 1].0;
        while take < merged.len() && merged[take].0 == last {
            take += 1;
        }
    }
    let has_more = take < merged.len();
    merged.truncate(take);
    let next_before = merged.last().filter(|_| has_more).map(|hit| hit.0);
    let message_ids: Vec<i32> = merged.iter().filter(|h| !h.1).map(|h| h.2).collect();
    let file_ids: Vec<i32> = merged.iter().filter(|h| h.1).map(|h| h.2).collect();
    let mut files: Vec<FileUpload> = if file_ids.is_empty() {
        Vec::new()
    } else {
        file_uploads::table
            .filter(file_uploads::id.eq_any(&file_ids))
            .select(FileUpload::as_select())
            .load(conn)?
    };
    files.sort_by_key(|f| std::cmp::Reverse((f.message_id, f.id)));
    Ok(SearchPage {
        messages: parts_many(conn, &message_ids)?,
        files,
        has_more,
        next_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_runs_of_letters_and_digits() {
        assert_eq!(terms("Report"), ["report"]);
        assert_eq!(terms("\"repo* NEAR( OR 'x' \\ ab"), ["repo", "near"]);
        assert_eq!(terms("今日は会議室で"), ["今日は会議室で"]);
        assert_eq!(terms("a b \" * ( ) ' \\"), Vec::<String>::new());
        assert_eq!(terms("foo foo FOO"), ["foo"]);
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(fts5_string("a\"b"), "\"a\"\"b\"");
        assert_eq!(like_anywhere("5%_\\"), "%5\\%\\_\\\\%");
        assert!(unspaced("会議"));
        assert!(!unspaced("report"));
    }
}
