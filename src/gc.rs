//! The sweeper: keeps the store and the `file_uploads` table in agreement.
//!
//! - Objects of deleted rows (and their thumbnails) are purged once
//!   `FILE_PURGE_AFTER_SECONDS` have passed.
//! - Objects with no row at all (a crash between storing and committing) are removed once
//!   older than `ORPHAN_MIN_AGE_SECONDS`, which no upload in progress can be.
//! - Uploads a killed process left half-done (S3 multipart uploads under this deployment's
//!   prefix, the local store's temporary files, and its parts directories of sessions no
//!   longer live, whose cleanup failed) are aborted once older than
//!   `ORPHAN_MIN_AGE_SECONDS` too.
//! - Direct upload sessions past `UPLOAD_SESSION_TTL_SECONDS` (not completed, or completed
//!   and not attached) expire: their multipart upload is aborted, their parts and object
//!   deleted, their quota given back. A live session's object and multipart upload are
//!   neither orphans nor stale, whatever their age.
//! - Rows whose object is missing are reported.
//! - Idempotency keys older than `idempotency::KEY_TTL` are deleted (they count as absent
//!   from then on anyway; this only keeps the table small).
//!
//! Safe on several instances at once: a purge is claimed in the database first, and
//! deleting an object twice is harmless.

use std::collections::HashSet;
use std::time::Duration;

use chrono::TimeDelta;
use serde::Serialize;

use crate::config::Settings;
use crate::db::{self, Db, models::now};
use crate::error::AppError;
use crate::realtime::{DeletionReason, Event};
use crate::state::{Announcement, AppState};
use crate::storage::Store;

const PURGE_BATCH: i64 = 500;
/// Files the retention sweep reads (and deletes, one transaction per channel) at a time.
const RETENTION_BATCH: i64 = 500;
/// A quota reservation older than this belongs to a request a crash cut off (the idle
/// timeout ends a live one long before).
const STALE_RESERVATION: TimeDelta = TimeDelta::hours(6);

#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    pub purged: usize,
    pub orphans_removed: usize,
    /// Multipart uploads aborted (S3), or temporary files and ended sessions' parts
    /// directories removed (local).
    pub stale_uploads_aborted: usize,
    /// Ids of rows whose object is not in the store.
    pub missing_objects: Vec<i32>,
    pub idempotency_keys_expired: usize,
    /// Quota reservations left by requests a crash cut off.
    pub quota_reservations_released: usize,
    /// Direct upload sessions expired (what they stored deleted).
    pub upload_sessions_expired: usize,
}

/// What the sweeper works on: the database, the store and the settings, nothing more (the
/// `gc` command starts no hub, no Redis and no listener).
#[derive(Clone)]
pub struct Sweeper {
    pub db: Db,
    pub store: Store,
    pub settings: std::sync::Arc<Settings>,
}

impl From<&AppState> for Sweeper {
    fn from(state: &AppState) -> Self {
        Sweeper {
            db: state.db.clone(),
            store: state.store.clone(),
            settings: state.settings.clone(),
        }
    }
}

pub async fn sweep(state: &Sweeper) -> Result<SweepReport, AppError> {
    let expired_before = now() - crate::idempotency::KEY_TTL;
    let mut report = SweepReport {
        purged: purge_deleted(state).await?,
        idempotency_keys_expired: state
            .db
            .write(move |conn| Ok(db::idempotency::delete_expired(conn, expired_before)?))
            .await?,
        upload_sessions_expired: crate::direct::expire_sessions(state).await?,
        ..SweepReport::default()
    };
    // Rows first, then the listing: an object stored after the listing cannot be taken
    // for an orphan, and one committed after the row query is too young to be swept.
    let expected = state
        .db
        .run(|conn| Ok(db::files::expected_objects(conn)?))
        .await?;
    // Only this deployment's prefix: objects of another deployment sharing the bucket (or
    // the data directory) are never taken for orphans.
    let objects = state.store.list(&state.store.owned_prefix()).await?;
    let listed: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    report.missing_objects = expected
        .iter()
        .filter(|(_, key)| !listed.contains(key.as_str()))
        .map(|(id, _)| *id)
        .collect();
    if !report.missing_objects.is_empty() {
        tracing::error!(rows = ?report.missing_objects, "file rows whose object is missing from the store");
    }

    let cutoff = now() - TimeDelta::seconds(state.settings.store.orphan_min_age_seconds);
    let old: Vec<String> = objects
        .iter()
        .filter(|o| o.last_modified.is_some_and(|t| t <= cutoff))
        .map(|o| o.key.clone())
        .collect();
    let (known, live) = {
        let old = old.clone();
        state
            .db
            .run(move |conn| Ok((db::files::known_keys(conn, &old)?, db::uploads::live(conn)?)))
            .await?
    };
    for key in old
        .iter()
        .filter(|k| !known.contains(*k) && !live.keys.contains(*k))
    {
        state.store.delete(key).await?;
        tracing::info!(key, "removed an object with no row");
        report.orphans_removed += 1;
    }
    report.stale_uploads_aborted = state
        .store
        .abort_stale_uploads(cutoff, &live.keys, &live.ids)
        .await?;
    report.quota_reservations_released = state
        .db
        .write(|conn| Ok(db::quota::release_stale(conn, STALE_RESERVATION)?))
        .await?;
    Ok(report)
}

async fn purge_deleted(state: &Sweeper) -> Result<usize, AppError> {
    let cutoff = now() - TimeDelta::seconds(state.settings.store.file_purge_after_seconds);
    let due = state
        .db
        .run(move |conn| Ok(db::files::due_for_purge(conn, cutoff, PURGE_BATCH)?))
        .await?;
    let mut purged = 0;
    for (id, key, thumbnail) in due {
        let claimed = state
            .db
            .write(move |conn| Ok(db::files::claim_purge(conn, id)?))
            .await?;
        if !claimed {
            continue; // another instance has it
        }
        let deleted = async {
            if let Some(thumbnail) = &thumbnail {
                state.store.delete(thumbnail).await?;
            }
            state.store.delete(&key).await
        };
        if let Err(e) = deleted.await {
            state
                .db
                .write(move |conn| Ok(db::files::release_purge(conn, id)?))
                .await?;
            return Err(e);
        }
        purged += 1;
    }
    Ok(purged)
}

/// Deletes the files older than their retention (`FILE_RETENTION_DAYS`, or a channel's
/// `retention_days`; the shorter wins) as their uploader's delete would: each announced as
/// `file_deleted` with `"reason": "retention"`, its bytes given back to the quota, its object
/// purged later by [`sweep`]. In batches: the files are never all in memory.
///
/// It needs the event bus, so the server's background sweeper runs it; `chatserver gc`
/// (no hub, no Redis) does not.
pub async fn apply_retention(state: &AppState) -> Result<usize, AppError> {
    let global = state.settings.store.file_retention_days.map(|d| d as i32);
    let own = state
        .db
        .run(|conn| Ok(db::channels::with_retention(conn)?))
        .await?;
    let mut deleted = 0;
    for (channel_id, days) in own {
        let days = global.map_or(days, |global| days.min(global));
        deleted += expire(state, Some(channel_id), days).await?;
    }
    if let Some(days) = global {
        deleted += expire(state, None, days).await?;
    }
    Ok(deleted)
}

async fn expire(state: &AppState, channel_id: Option<i32>, days: i32) -> Result<usize, AppError> {
    let cutoff = now() - TimeDelta::days(days.into());
    let mut deleted = 0;
    loop {
        let batch = state
            .db
            .run(move |conn| {
                Ok(db::files::past_retention(
                    conn,
                    channel_id,
                    cutoff,
                    RETENTION_BATCH,
                )?)
            })
            .await?;
        let full = batch.len() as i64 == RETENTION_BATCH;
        let mut by_channel: std::collections::BTreeMap<i32, Vec<(i32, i32)>> = Default::default();
        for (id, message_id, channel) in batch {
            by_channel
                .entry(channel)
                .or_default()
                .push((id, message_id));
        }
        for (channel, files) in by_channel {
            deleted += state
                .write_and_announce(move |conn| {
                    // The channel's row first, as every announcing write takes it: the
                    // same lock order as a user's delete of one of these files.
                    db::allocate_event_seq(conn, channel, 0)?;
                    let mut events = Vec::new();
                    for (id, message_id) in files {
                        if db::files::soft_delete(conn, id)? {
                            events.push(Event::FileDeleted {
                                id,
                                message_id,
                                reason: DeletionReason::Retention,
                            });
                        }
                    }
                    let count = events.len();
                    let first_seq = match count {
                        0 => 0,
                        n => db::allocate_event_seq(conn, channel, n as i64)?,
                    };
                    let announcement = Announcement {
                        channel_id: channel,
                        first_seq,
                        events,
                    };
                    Ok((count, announcement))
                })
                .await?;
        }
        if !full {
            return Ok(deleted);
        }
    }
}

/// Runs the sweeper every `GC_INTERVAL_SECONDS` in the background.
pub fn spawn_background(state: &AppState) {
    let app = state.clone();
    let state = Sweeper::from(state);
    let every = state.settings.store.gc_interval_seconds;
    if every == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(every));
        ticker.tick().await; // the first tick is immediate: let startup finish first
        loop {
            ticker.tick().await;
            match apply_retention(&app).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "files deleted by retention"),
                Err(e) => {
                    tracing::warn!(error = ?e, "retention sweep failed; retrying next interval")
                }
            }
            match sweep(&state).await {
                Ok(report)
                    if report.purged
                        + report.orphans_removed
                        + report.stale_uploads_aborted
                        + report.idempotency_keys_expired
                        + report.upload_sessions_expired
                        > 0 =>
                {
                    tracing::info!(
                        purged = report.purged,
                        orphans_removed = report.orphans_removed,
                        stale_uploads_aborted = report.stale_uploads_aborted,
                        idempotency_keys_expired = report.idempotency_keys_expired,
                        upload_sessions_expired = report.upload_sessions_expired,
                        "storage sweep"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = ?e, "storage sweep failed; retrying next interval")
                }
            }
        }
    });
}
