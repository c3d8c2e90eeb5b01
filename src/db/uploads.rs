//! Direct upload sessions (`upload_sessions`): the browser sends the bytes straight to the
//! store; these rows say what it may send and what became of it.
//!
//! States: `pending` (parts being sent) -> `completing` (one `complete` call checks the
//! object; the conditional update that claims it is what makes two concurrent calls produce
//! one file) -> `ready` (checked, not yet in a message) -> `attached`. Or `failed` (the
//! object did not pass its checks and is deleted) or `expired` (the sweeper ended it). The
//! declared size of a live session (`pending`, `completing`, `ready`) counts against its
//! user's quota; ending the session gives it back.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::models::now;
use super::schema::upload_sessions;

pub const PENDING: &str = "pending";
pub const COMPLETING: &str = "completing";
pub const READY: &str = "ready";
pub const ATTACHED: &str = "attached";
pub const FAILED: &str = "failed";
pub const EXPIRED: &str = "expired";
/// The states whose declared bytes are held against the quota and whose object is kept.
pub const LIVE: [&str; 3] = [PENDING, COMPLETING, READY];

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = upload_sessions)]
pub struct UploadSession {
    pub id: String,
    pub user_id: i32,
    pub channel_id: i32,
    pub file_name: String,
    pub file_size: i64,
    /// The declared type until `ready`, then the sniffed one.
    pub content_type: Option<String>,
    pub state: String,
    pub part_size: i64,
    pub part_count: i32,
    pub object_key: String,
    pub s3_upload_id: Option<String>,
    pub sha256: Option<String>,
    /// For `failed`: the error code `complete` answered (answered again on a retry).
    pub failure: Option<String>,
    pub file_id: Option<i32>,
    pub updated_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    /// The stored object's size when it differs from `file_size` (metadata stripped).
    pub stored_size: Option<i64>,
}

impl UploadSession {
    /// The size of the bytes kept: what the file row and downloads have.
    pub fn kept_size(&self) -> i64 {
        self.stored_size.unwrap_or(self.file_size)
    }

    /// The exact length of part `n` (1-based).
    pub fn part_len(&self, n: i32) -> i64 {
        if n < self.part_count {
            self.part_size
        } else {
            self.file_size - self.part_size * i64::from(self.part_count - 1)
        }
    }
}

/// Live sessions of a user (for `MAX_PENDING_UPLOADS`) and their declared bytes.
pub fn live_of_user(conn: &mut AnyConnection, user_id: i32) -> QueryResult<(usize, i64)> {
    let sizes: Vec<i64> = upload_sessions::table
        .filter(upload_sessions::user_id.eq(user_id))
        .filter(upload_sessions::state.eq_any(LIVE))
        .select(upload_sessions::file_size)
        .load(conn)?;
    Ok((sizes.len(), sizes.iter().sum()))
}

pub fn insert(conn: &mut AnyConnection, session: &UploadSession) -> QueryResult<()> {
    diesel::insert_into(upload_sessions::table)
        .values(session.clone())
        .execute(conn)
        .map(|_| ())
}

/// The session `id` of `user_id`; `NotFound` for anyone else's.
pub fn find_own(conn: &mut AnyConnection, id: &str, user_id: i32) -> QueryResult<UploadSession> {
    upload_sessions::table
        .filter(upload_sessions::id.eq(id))
        .filter(upload_sessions::user_id.eq(user_id))
        .select(UploadSession::as_select())
        .first(conn)
}

pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<UploadSession>> {
    upload_sessions::table
        .find(id)
        .select(UploadSession::as_select())
        .first(conn)
        .optional()
}

/// Moves a session from state `from` to `to`; `false` when it was not in `from` (another
/// call got there first). The conditional update is the lock.
pub fn transition(conn: &mut AnyConnection, id: &str, from: &str, to: &str) -> QueryResult<bool> {
    let changed = diesel::update(
        upload_sessions::table
            .filter(upload_sessions::id.eq(id))
            .filter(upload_sessions::state.eq(from)),
    )
    .set((
        upload_sessions::state.eq(to),
        upload_sessions::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// `completing` -> `ready`, with what the checks found; a ready session waits `ttl` to be
/// attached.
pub fn mark_ready(
    conn: &mut AnyConnection,
    id: &str,
    ready: Ready<'_>,
    expires_at: NaiveDateTime,
) -> QueryResult<bool> {
    let session = upload_sessions::table
        .filter(upload_sessions::id.eq(id))
        .filter(upload_sessions::state.eq(COMPLETING));
    let checked = (
        upload_sessions::state.eq(READY),
        upload_sessions::content_type.eq(Some(ready.content_type)),
        upload_sessions::sha256.eq(ready.sha256),
        upload_sessions::updated_at.eq(now()),
        upload_sessions::expires_at.eq(expires_at),
    );
    let changed = match ready.rewritten {
        Some((object_key, stored_size)) => diesel::update(session)
            .set((
                checked,
                upload_sessions::object_key.eq(object_key),
                upload_sessions::stored_size.eq(Some(stored_size)),
            ))
            .execute(conn)?,
        None => diesel::update(session).set(checked).execute(conn)?,
    };
    Ok(changed == 1)
}

/// What `complete` found a session's stored file to be.
pub struct Ready<'a> {
    pub content_type: &'a str,
    pub sha256: Option<&'a str>,
    /// The object rewritten (metadata stripped): its key and size now (`stored_size`; the
    /// declared `file_size` stays).
    pub rewritten: Option<(&'a str, i64)>,
}

/// `completing` -> `failed` with the code `complete` answered.
pub fn mark_failed(conn: &mut AnyConnection, id: &str, code: &str) -> QueryResult<bool> {
    let changed = diesel::update(
        upload_sessions::table
            .filter(upload_sessions::id.eq(id))
            .filter(upload_sessions::state.eq(COMPLETING)),
    )
    .set((
        upload_sessions::state.eq(FAILED),
        upload_sessions::failure.eq(Some(code)),
        upload_sessions::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Ends a live session of `user_id` (`DELETE`): `expired`, its bytes given back. The
/// session as it was, or `None` when it was not live.
pub fn abort(
    conn: &mut AnyConnection,
    id: &str,
    user_id: i32,
) -> QueryResult<Option<UploadSession>> {
    let session = find_own(conn, id, user_id)?;
    if !LIVE.contains(&session.state.as_str()) {
        return Ok(None);
    }
    Ok(transition(conn, id, &session.state, EXPIRED)?.then_some(session))
}

/// Fills in the hash computed after `ready` (on the session, and on its file if attached
/// since: whichever committed first, the file ends up with it).
pub fn set_sha256(conn: &mut AnyConnection, id: &str, key: &str, sha256: &str) -> QueryResult<()> {
    use super::schema::file_uploads;
    diesel::update(upload_sessions::table.find(id))
        .set(upload_sessions::sha256.eq(Some(sha256)))
        .execute(conn)?;
    diesel::update(
        file_uploads::table
            .filter(file_uploads::s3_key.eq(key))
            .filter(file_uploads::sha256.is_null()),
    )
    .set(file_uploads::sha256.eq(Some(sha256)))
    .execute(conn)?;
    Ok(())
}

/// Claims a ready session of `user_id` for `channel_id` to attach it; `None` when it is not
/// one (another user's, another channel's, not ready, or attached already).
pub fn claim_for_message(
    conn: &mut AnyConnection,
    id: &str,
    user_id: i32,
    channel_id: i32,
) -> QueryResult<Option<UploadSession>> {
    let changed = diesel::update(
        upload_sessions::table
            .filter(upload_sessions::id.eq(id))
            .filter(upload_sessions::user_id.eq(user_id))
            .filter(upload_sessions::channel_id.eq(channel_id))
            .filter(upload_sessions::state.eq(READY)),
    )
    .set((
        upload_sessions::state.eq(ATTACHED),
        upload_sessions::updated_at.eq(now()),
    ))
    .execute(conn)?;
    if changed != 1 {
        return Ok(None);
    }
    find(conn, id)
}

pub fn set_file_id(conn: &mut AnyConnection, id: &str, file_id: i32) -> QueryResult<()> {
    diesel::update(upload_sessions::table.find(id))
        .set(upload_sessions::file_id.eq(Some(file_id)))
        .execute(conn)
        .map(|_| ())
}

/// Live sessions past their expiry, at most `limit`.
pub fn due_to_expire(
    conn: &mut AnyConnection,
    at: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<UploadSession>> {
    upload_sessions::table
        .filter(upload_sessions::state.eq_any(LIVE))
        .filter(upload_sessions::expires_at.lt(at))
        .order(upload_sessions::expires_at.asc())
        .limit(limit)
        .select(UploadSession::as_select())
        .load(conn)
}

/// What live sessions hold in the store, which the sweeper must leave alone.
#[derive(Debug, Default)]
pub struct LiveUploads {
    /// Their object keys: not orphans, and their multipart uploads not stale.
    pub keys: std::collections::HashSet<String>,
    /// Their ids: the local store keeps their parts.
    pub ids: std::collections::HashSet<String>,
}

pub fn live(conn: &mut AnyConnection) -> QueryResult<LiveUploads> {
    let rows: Vec<(String, String)> = upload_sessions::table
        .filter(upload_sessions::state.eq_any(LIVE))
        .select((upload_sessions::id, upload_sessions::object_key))
        .load(conn)?;
    let mut live = LiveUploads::default();
    for (id, key) in rows {
        live.ids.insert(id);
        live.keys.insert(key);
    }
    Ok(live)
}

/// Forgets ended sessions (attached, failed, expired) last changed before `before`.
pub fn delete_ended(conn: &mut AnyConnection, before: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(
        upload_sessions::table
            .filter(upload_sessions::state.eq_any([ATTACHED, FAILED, EXPIRED]))
            .filter(upload_sessions::updated_at.lt(before)),
    )
    .execute(conn)
}
