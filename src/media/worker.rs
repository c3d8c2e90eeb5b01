//! The preview workers: `MEDIA_WORKERS` tasks per instance, each taking one job at a time
//! from the database queue (`db::media_jobs`), never on a request's path.
//!
//! A job: read the image from the store, make its previews on the blocking pool within
//! `MEDIA_JOB_TIMEOUT_SECONDS`, store the thumbnail beside the original, record what was
//! found and announce `file_updated`. An image that cannot be read (truncated, too many
//! pixels, a decoder error, too slow) is logged once and its job dropped: the file stays a
//! plain file. Failures of the store or the database leave the job to be claimed again
//! when its lease runs out (at most `MAX_ATTEMPTS` times).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::TimeDelta;

use super::previews::{self, PreviewError};
use crate::db::{self, media_jobs::MAX_ATTEMPTS};
use crate::error::AppError;
use crate::realtime::Event;
use crate::state::{Announcement, AppState};
use crate::storage::Presentation;

/// How often an idle worker looks at the queue (jobs of other instances included).
const POLL: Duration = Duration::from_millis(500);

/// Starts the workers (none with `MEDIA_WORKERS=0`).
pub fn spawn(state: &AppState) {
    for worker in 0..state.settings.media.workers {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                match run_one(&state).await {
                    Ok(true) => {}
                    Ok(false) => tokio::time::sleep(POLL).await,
                    Err(e) => {
                        tracing::warn!(worker, error = %e, "preview worker: retrying later");
                        tokio::time::sleep(POLL * 4).await;
                    }
                }
            }
        });
    }
}

/// What became of a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Previews made and announced.
    Done,
    /// Kept as a plain file (not an image we can read, or gone meanwhile).
    Dropped,
}

/// Claims and runs one job; `false` when the queue had none free.
pub async fn run_one(state: &AppState) -> Result<bool, AppError> {
    let timeout = Duration::from_secs(state.settings.media.job_timeout_seconds);
    // The lease outlives the timeout, so a live worker never loses its job to another.
    let lease = TimeDelta::seconds(state.settings.media.job_timeout_seconds as i64 * 2 + 30);
    let claimed = state
        .db
        .write(move |conn| Ok(db::media_jobs::claim(conn, lease)?))
        .await?;
    let Some((file_id, attempts)) = claimed else {
        return Ok(false);
    };
    if attempts > MAX_ATTEMPTS {
        tracing::warn!(
            file_id,
            attempts,
            "previews given up after repeated attempts; kept as a plain file"
        );
        finish(state, file_id).await?;
        return Ok(true);
    }
    let outcome = process(state, file_id, timeout).await?;
    tracing::debug!(file_id, ?outcome, "preview job");
    finish(state, file_id).await?;
    Ok(true)
}

async fn finish(state: &AppState, file_id: i32) -> Result<(), AppError> {
    state
        .db
        .write(move |conn| Ok(db::media_jobs::finish(conn, file_id)?))
        .await
}

async fn process(state: &AppState, file_id: i32, timeout: Duration) -> Result<Outcome, AppError> {
    let file = state
        .db
        .run(move |conn| Ok(db::files::find(conn, file_id)?))
        .await?;
    let Some(file) = file.filter(|f| !f.is_deleted) else {
        return Ok(Outcome::Dropped);
    };
    let mime = file.content_type.clone().unwrap_or_default();
    let max_bytes = state.upload_rules.max_file_bytes;
    let Some(bytes) = state.store.read(&file.s3_key, max_bytes).await? else {
        tracing::warn!(file_id, "no object for a file waiting for previews");
        return Ok(Outcome::Dropped);
    };
    let max_pixels = state.settings.media.max_image_pixels;
    let bytes = Arc::new(bytes);
    let work = {
        let (bytes, mime) = (bytes.clone(), mime.clone());
        tokio::task::spawn_blocking(move || previews::make(&bytes, &mime, max_pixels))
    };
    // A decode cannot be interrupted: past the timeout it finishes on its own (bounded by
    // the pixel limit) and its result is dropped.
    let made = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(made)) => made,
        Ok(Err(panicked)) => Err(PreviewError::Undecodable(format!(
            "the decoder panicked: {panicked}"
        ))),
        Err(_) => Err(PreviewError::Undecodable(format!(
            "no preview within {} s",
            timeout.as_secs()
        ))),
    };
    drop(bytes);
    let preview = match made {
        Ok(preview) => preview,
        Err(e) => {
            // Logged once: the job is dropped with this.
            tracing::info!(file_id, content_type = %mime, reason = %e, "no previews; kept as a plain file");
            return Ok(Outcome::Dropped);
        }
    };
    let thumbnail_key = super::thumbnail_key(&file.s3_key, preview.thumbnail_extension);
    let presentation = super::thumbnail_presentation(&file.file_name, &thumbnail_key);
    state
        .store
        .put_bytes(
            &thumbnail_key,
            &presentation,
            Bytes::from(preview.thumbnail),
        )
        .await?;
    let channel_id = file.channel_id;
    let (width, height) = (preview.width as i32, preview.height as i32);
    let hash = preview.thumbhash;
    let recorded_key = thumbnail_key.clone();
    let recorded = state
        .write_and_announce(move |conn| {
            // The channel's row first, as every announcing write takes it.
            db::allocate_event_seq(conn, channel_id, 0)?;
            if !db::files::set_preview(conn, file_id, width, height, &recorded_key, &hash)? {
                return Ok((false, Announcement::none(channel_id)));
            }
            let seq = db::allocate_event_seq(conn, channel_id, 1)?;
            let file = db::files::find(conn, file_id)?.ok_or(AppError::NotFound)?;
            Ok((
                true,
                Announcement::one(channel_id, seq, Event::FileUpdated { file }),
            ))
        })
        .await?;
    if !recorded {
        // Deleted while we worked: its thumbnail has no row to be purged with.
        state.store.delete(&thumbnail_key).await?;
        return Ok(Outcome::Dropped);
    }
    Ok(Outcome::Done)
}

/// The presentation of a thumbnail object: its own type, inline, named after the file.
pub fn presentation_of(file_name: &str, thumbnail_key: &str) -> Presentation {
    let (content_type, extension) = if thumbnail_key.ends_with(".webp") {
        ("image/webp", "webp")
    } else {
        ("image/jpeg", "jpg")
    };
    let stem = file_name
        .rsplit_once('.')
        .map_or(file_name, |(stem, _)| stem);
    Presentation::of(&format!("{stem}.thumbnail.{extension}"), content_type)
}
