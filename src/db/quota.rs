//! Storage quotas: each user's bytes of live files (`users.storage_used_bytes`, kept by
//! the writes that add and delete files: `files::insert_all`, `files::soft_delete`) and the
//! reservations of uploads in flight.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use super::AnyConnection;
use super::models::now;
use super::schema::{file_uploads, quota_reservations, users};

/// Reserves up to `want` bytes for `user_id` (at least `at_least`) within what their live
/// files and other reservations leave of `quota`; returns the reservation's id and size, or
/// `None` when not even `at_least` fits.
/// Run in a write transaction: the first statement locks the user's row (PostgreSQL; SQLite
/// has one writer), so concurrent reservations of one user, on any instance, are decided
/// one after another and never overbook.
pub fn reserve(
    conn: &mut AnyConnection,
    user_id: i32,
    want: i64,
    at_least: i64,
    quota: i64,
) -> QueryResult<Option<(i64, i64)>> {
    let (used, reserved) = lock_and_count(conn, user_id)?;
    let left = quota - used - reserved;
    let bytes = want.min(left);
    if bytes < at_least.max(1) {
        return Ok(None);
    }
    let insert = diesel::insert_into(quota_reservations::table)
        .values((
            quota_reservations::user_id.eq(user_id),
            quota_reservations::bytes.eq(bytes),
            quota_reservations::created_at.eq(now()),
        ))
        .returning(quota_reservations::id);
    let id: i64 = crate::per_backend!(conn, |c| insert.get_result(c))?;
    Ok(Some((id, bytes)))
}

/// Locks `user_id`'s row (PostgreSQL; SQLite has one writer) and returns the bytes of their
/// live files and the bytes held for them: reservations of uploads in flight and the
/// declared sizes of their live direct upload sessions.
pub fn lock_and_count(conn: &mut AnyConnection, user_id: i32) -> QueryResult<(i64, i64)> {
    let lock_and_read = diesel::update(users::table.find(user_id))
        .set(users::storage_used_bytes.eq(users::storage_used_bytes))
        .returning(users::storage_used_bytes);
    let used: i64 = crate::per_backend!(conn, |c| lock_and_read.get_result(c))?;
    // A user has a handful of reservations at most (uploads in flight): summed here, which
    // also spares SUM(bigint)'s NUMERIC on PostgreSQL.
    let reserved: i64 = quota_reservations::table
        .filter(quota_reservations::user_id.eq(user_id))
        .select(quota_reservations::bytes)
        .load::<i64>(conn)?
        .iter()
        .sum();
    let (_, sessions) = super::uploads::live_of_user(conn, user_id)?;
    Ok((used, reserved + sessions))
}

pub fn release(conn: &mut AnyConnection, reservation_id: i64) -> QueryResult<()> {
    diesel::delete(quota_reservations::table.find(reservation_id))
        .execute(conn)
        .map(|_| ())
}

/// Reservations older than `max_age`: their request was cut off by a crash.
pub fn release_stale(conn: &mut AnyConnection, max_age: TimeDelta) -> QueryResult<usize> {
    let cutoff: NaiveDateTime = now() - max_age;
    diesel::delete(quota_reservations::table.filter(quota_reservations::created_at.lt(cutoff)))
        .execute(conn)
}

/// Adds (or, negative, removes) bytes of live files to a user's count.
pub fn add_used(conn: &mut AnyConnection, user_id: i32, bytes: i64) -> QueryResult<()> {
    diesel::update(users::table.find(user_id))
        .set(users::storage_used_bytes.eq(users::storage_used_bytes + bytes))
        .execute(conn)
        .map(|_| ())
}

/// `(used_bytes, live file count)` of a user.
pub fn usage(conn: &mut AnyConnection, user_id: i32) -> QueryResult<(i64, i64)> {
    let used = users::table
        .find(user_id)
        .select(users::storage_used_bytes)
        .first(conn)?;
    let files = file_uploads::table
        .filter(file_uploads::uploaded_by.eq(user_id))
        .filter(file_uploads::is_deleted.eq(false))
        .count()
        .get_result(conn)?;
    Ok((used, files))
}
