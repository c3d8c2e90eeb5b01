//! The queue of images waiting for their previews. A job is a row: queued in the
//! transaction that records its file, claimed with a lease by one worker of any instance,
//! deleted when done. A job whose worker died comes back when its lease runs out.

use chrono::TimeDelta;
use diesel::prelude::*;

use super::AnyConnection;
use super::models::now;
use super::schema::media_jobs;

/// A job claimed this many times without finishing (each claim a worker that died or timed
/// out on it) is dropped: its file stays a plain file.
pub const MAX_ATTEMPTS: i32 = 3;

/// The types the preview worker reads.
pub fn wants_preview(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/jpeg" | "image/png" | "image/webp" | "image/gif"
    )
}

pub fn enqueue(conn: &mut AnyConnection, file_ids: &[i32]) -> QueryResult<()> {
    if file_ids.is_empty() {
        return Ok(());
    }
    let created_at = now();
    // One row at a time: a batch insert is not portable across the two backends here.
    for id in file_ids {
        diesel::insert_into(media_jobs::table)
            .values((
                media_jobs::file_id.eq(*id),
                media_jobs::attempts.eq(0),
                media_jobs::created_at.eq(created_at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Claims the oldest job that nobody holds (never claimed, or its lease ran out) for
/// `lease`: `(file_id, attempts so far including this one)`, or `None` when there is none.
/// Safe against other instances claiming at once: the update re-checks the lease, and only
/// one of them changes the row.
pub fn claim(conn: &mut AnyConnection, lease: TimeDelta) -> QueryResult<Option<(i32, i32)>> {
    let at = now();
    let free = media_jobs::leased_until
        .is_null()
        .or(media_jobs::leased_until.lt(at));
    for _ in 0..3 {
        let candidate: Option<i32> = media_jobs::table
            .filter(free)
            .order((media_jobs::created_at.asc(), media_jobs::file_id.asc()))
            .select(media_jobs::file_id)
            .first(conn)
            .optional()?;
        let Some(file_id) = candidate else {
            return Ok(None);
        };
        let claimed = diesel::update(
            media_jobs::table
                .filter(media_jobs::file_id.eq(file_id))
                .filter(free),
        )
        .set((
            media_jobs::leased_until.eq(Some(at + lease)),
            media_jobs::attempts.eq(media_jobs::attempts + 1),
        ))
        .returning(media_jobs::attempts);
        let attempts: Option<i32> =
            crate::per_backend!(conn, |c| claimed.get_result(c).optional())?;
        if let Some(attempts) = attempts {
            return Ok(Some((file_id, attempts)));
        }
        // Another worker took it first: look again.
    }
    Ok(None)
}

/// Removes a job: done, or given up.
pub fn finish(conn: &mut AnyConnection, file_id: i32) -> QueryResult<()> {
    diesel::delete(media_jobs::table.filter(media_jobs::file_id.eq(file_id)))
        .execute(conn)
        .map(|_| ())
}

/// Jobs waiting or in progress (for tests and operators).
pub fn pending(conn: &mut AnyConnection) -> QueryResult<i64> {
    media_jobs::table.count().get_result(conn)
}
