//! Direct uploads: the browser sends a file's bytes straight to the store with presigned
//! part URLs (the local store: signed URLs to the server's own part route), and nothing
//! becomes visible until `complete` has checked the stored object.
//!
//! - Creation checks what the client declares (size against `MAX_FILE_SIZE_MB` and the
//!   quota, at most `MAX_PENDING_UPLOADS` open) in one transaction that locks the user's row:
//!   the session's declared size counts against the quota from then until it ends.
//! - `complete` trusts nothing the client said: it lists the stored parts (each must have
//!   its exact length), makes the object, checks its size, sniffs its first bytes (a ranged
//!   GET) under the rules of server uploads, and hashes the stored bytes (a streaming GET;
//!   for files over `INLINE_HASH_LIMIT`, in the background: `sha256` is filled in shortly
//!   after). A conditional `pending -> completing` update lets one call do it: a concurrent
//!   call waits for its outcome and answers the same.
//! - The object stays where it was put (under the staging prefix, `{prefix}/uploads/`); the
//!   file row made when a message attaches it points there. No object outlives its session
//!   without a row: the sweeper expires sessions past `UPLOAD_SESSION_TTL_SECONDS` and
//!   deletes what they stored.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{NaiveDateTime, TimeDelta};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::config::Secret;
use crate::db::models::{StoredFile, now};
use crate::db::uploads::{self as sessions, UploadSession};
use crate::db::{self, AnyConnection};
use crate::error::{AppError, ErrorCode};
use crate::gc::Sweeper;
use crate::idempotency::Completion;
use crate::media::{self, ImageKind};
use crate::state::AppState;
use crate::storage::{DirectTarget, Presentation, Store, StoredPart};
use crate::uploads::{Kept, Sniffed, clean_file_name, sniff};

/// S3's limits on a multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// Part URLs asked for in one call at most.
pub const MAX_URLS_PER_CALL: usize = 100;
/// Part URLs live this long (the contract: at most 15 minutes).
pub const PART_URL_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Files up to this size are hashed before `complete` answers; larger ones after.
pub const INLINE_HASH_LIMIT: u64 = 16 * 1024 * 1024;
/// How many leading bytes decide the type (as for server uploads).
const SNIFF_BYTES: usize = 8 * 1024;
/// How long a `complete` call waits for a concurrent one's outcome before answering 409.
const COMPLETE_WAIT: Duration = Duration::from_secs(60);
/// A `completing` claim this old belongs to a call a crash cut off: it may be taken over.
const ABANDONED_COMPLETE: TimeDelta = TimeDelta::minutes(10);
/// Sessions the sweeper expires per round.
const EXPIRE_BATCH: i64 = 200;
/// Ended sessions are forgotten this long after they ended.
const FORGET_ENDED_AFTER: TimeDelta = TimeDelta::days(7);

type HmacSha256 = Hmac<Sha256>;

/// `POST /api/uploads`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUpload {
    pub channel_id: i32,
    pub file_name: String,
    pub file_size: i64,
    /// What the client believes the type is; informative only (the stored bytes decide).
    pub content_type: Option<String>,
}

/// A direct upload as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadView {
    /// Opaque.
    pub id: String,
    pub channel_id: i32,
    pub file_name: String,
    pub file_size: i64,
    /// Declared until `ready`, then the type sniffed from the stored bytes.
    pub content_type: Option<String>,
    /// `pending`, `ready`, `attached`, `failed` or `expired` (a `complete` in progress
    /// shows as `pending`).
    pub state: String,
    pub part_size: i64,
    pub part_count: i32,
    /// Part numbers the store holds (while `pending`); every part once `ready`.
    pub parts_done: Vec<i32>,
    #[serde(with = "crate::db::models::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: NaiveDateTime,
    /// Null until `ready`.
    pub file: Option<FilePreview>,
}

/// What `complete` found: the checked file, before (or, with `id`, after) it is attached.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FilePreview {
    /// The file's id once attached to a message; null before.
    pub id: Option<i32>,
    pub file_name: String,
    pub content_type: String,
    pub file_size: i64,
    /// The SHA-256 of the stored bytes; null while the server computes it (large files).
    pub sha256: Option<String>,
}

/// One presigned part URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartUrl {
    pub part_number: i32,
    pub url: String,
    #[serde(with = "crate::db::models::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: NaiveDateTime,
}

/// A part as the client says it sent it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SentPart {
    pub part_number: i32,
    pub etag: String,
}

fn view(session: &UploadSession, parts_done: Vec<i32>) -> UploadView {
    let state = match session.state.as_str() {
        sessions::COMPLETING => sessions::PENDING,
        other => other,
    };
    let parts_done = match state {
        sessions::READY | sessions::ATTACHED => (1..=session.part_count).collect(),
        _ => parts_done,
    };
    let file = matches!(state, sessions::READY | sessions::ATTACHED).then(|| FilePreview {
        id: session.file_id,
        file_name: session.file_name.clone(),
        content_type: session.content_type.clone().unwrap_or_default(),
        file_size: session.kept_size(),
        sha256: session.sha256.clone(),
    });
    UploadView {
        id: session.id.clone(),
        channel_id: session.channel_id,
        file_name: session.file_name.clone(),
        file_size: session.file_size,
        content_type: session.content_type.clone(),
        state: state.to_owned(),
        part_size: session.part_size,
        part_count: session.part_count,
        parts_done,
        expires_at: session.expires_at,
        file,
    }
}

fn target(session: &UploadSession) -> DirectTarget<'_> {
    DirectTarget {
        key: &session.object_key,
        upload_id: session.s3_upload_id.as_deref(),
        session_id: &session.id,
    }
}

/// The part size for a file: the configured one, grown so no file needs more than 10,000
/// parts (rounded up to whole MiB).
fn part_size_for(file_size: u64, configured: u64) -> u64 {
    let needed = file_size.div_ceil(MAX_PARTS);
    if needed <= configured {
        configured
    } else {
        needed.div_ceil(1024 * 1024) * 1024 * 1024
    }
}

fn size_mismatch(message: impl Into<String>) -> AppError {
    AppError::Unprocessable {
        code: ErrorCode::SizeMismatch,
        message: message.into(),
    }
}

fn ttl(state: &AppState) -> TimeDelta {
    TimeDelta::seconds(state.settings.store.upload_session_ttl_seconds)
}

// ---------------------------------------------------------------------------------------
// The calls

/// `POST /api/uploads`: a new session, with the S3 multipart upload started when one is
/// needed. With an idempotency `completion`, its answer is recorded in the same
/// transaction as the session.
pub async fn create(
    state: &AppState,
    user_id: i32,
    request: CreateUpload,
    completion: Option<Completion>,
) -> Result<UploadView, AppError> {
    if request.file_size < 1 {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "file_size must be at least 1",
        ));
    }
    let file_size = request.file_size as u64;
    let rules = &state.upload_rules;
    if file_size > rules.max_file_bytes {
        return Err(AppError::PayloadTooLarge(format!(
            "a file may be at most {} MB",
            rules.max_file_bytes / (1024 * 1024)
        )));
    }
    let file_name = clean_file_name(&request.file_name)?;
    let declared_type = request
        .content_type
        .filter(|t| t.len() <= 255 && t.is_ascii() && !t.trim().is_empty());
    let channel_id = request.channel_id;
    // Not visible: 404 before anything is started in the store.
    state
        .db
        .run(move |conn| Ok(db::channels::find_for_member(conn, channel_id, user_id)?))
        .await?;
    let part_size = part_size_for(file_size, state.settings.store.direct_upload_part_size);
    let part_count = file_size.div_ceil(part_size) as i32;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let key = state.store.new_staging_key();
    // Stored as a download (never rendered) whatever the client declared; the row decides
    // how it is served.
    let presentation = Presentation::of(&file_name, "application/octet-stream");
    // Checked before the multipart upload is started, and again with the row's lock.
    check_room(state, user_id, file_size).await?;
    let upload_id = state
        .store
        .direct_begin(&key, part_count, &presentation)
        .await?;
    let at = now();
    let session = UploadSession {
        id,
        user_id,
        channel_id,
        file_name,
        file_size: file_size as i64,
        content_type: declared_type,
        state: sessions::PENDING.to_owned(),
        part_size: part_size as i64,
        part_count,
        object_key: key,
        s3_upload_id: upload_id,
        sha256: None,
        failure: None,
        file_id: None,
        updated_at: at,
        expires_at: at + ttl(state),
        stored_size: None,
    };
    let quota = state.settings.limits.user_quota_bytes;
    let max_pending = state.settings.limits.max_pending_uploads;
    let row = session.clone();
    let created = state
        .db
        .write(move |conn| {
            db::channels::find_for_member(conn, channel_id, user_id)?;
            check_room_locked(conn, user_id, row.file_size, quota, max_pending)?;
            sessions::insert(conn, &row)?;
            let answer = view(&row, Vec::new());
            if let Some(completion) = completion {
                let body =
                    serde_json::to_value(&answer).map_err(|e| AppError::Internal(e.into()))?;
                completion.record(conn, actix_web::http::StatusCode::CREATED, &body)?;
            }
            Ok(answer)
        })
        .await;
    if created.is_err() {
        // Nothing recorded: nothing may stay in the store either.
        let _ = state.store.direct_abort(target(&session)).await;
    }
    created
}

async fn check_room(state: &AppState, user_id: i32, size: u64) -> Result<(), AppError> {
    let quota = state.settings.limits.user_quota_bytes;
    let max_pending = state.settings.limits.max_pending_uploads;
    state
        .db
        .write(move |conn| check_room_locked(conn, user_id, size as i64, quota, max_pending))
        .await
}

/// `MAX_PENDING_UPLOADS` and the quota, with the user's row locked (concurrent creations
/// of one user are decided one after another).
fn check_room_locked(
    conn: &mut AnyConnection,
    user_id: i32,
    size: i64,
    quota: Option<u64>,
    max_pending: usize,
) -> Result<(), AppError> {
    let (used, held) = db::quota::lock_and_count(conn, user_id)?;
    let (open, _) = sessions::live_of_user(conn, user_id)?;
    if open >= max_pending {
        return Err(AppError::RateLimited {
            retry_after_seconds: 60,
        });
    }
    if let Some(quota) = quota
        && used + held + size > quota.min(i64::MAX as u64) as i64
    {
        return Err(AppError::QuotaExceeded(format!(
            "this would take you over your storage quota of {} MB: delete some files first",
            quota / (1024 * 1024)
        )));
    }
    Ok(())
}

async fn load_own(state: &AppState, user_id: i32, id: &str) -> Result<UploadSession, AppError> {
    let id = id.to_owned();
    state
        .db
        .run(move |conn| Ok(sessions::find_own(conn, &id, user_id)?))
        .await
}

/// `GET /api/uploads/{id}`: with `parts_done` as the store reports them.
pub async fn show(state: &AppState, user_id: i32, id: &str) -> Result<UploadView, AppError> {
    let session = load_own(state, user_id, id).await?;
    let done = if session.state == sessions::PENDING {
        parts_done(&state.store, &session).await?
    } else {
        Vec::new()
    };
    Ok(view(&session, done))
}

/// Part numbers the store holds with their exact length (a part of the wrong length is
/// not done: sending it again fixes it).
async fn parts_done(store: &Store, session: &UploadSession) -> Result<Vec<i32>, AppError> {
    Ok(store
        .direct_parts(target(session))
        .await?
        .into_iter()
        .filter(|p| {
            (1..=session.part_count).contains(&p.part_number)
                && p.size as i64 == session.part_len(p.part_number)
        })
        .map(|p| p.part_number)
        .collect())
}

/// `POST /api/uploads/{id}/parts`: a `PUT` URL per part number.
pub async fn part_urls(
    state: &AppState,
    base_url: &str,
    user_id: i32,
    id: &str,
    numbers: Vec<i32>,
) -> Result<Vec<PartUrl>, AppError> {
    if numbers.is_empty() || numbers.len() > MAX_URLS_PER_CALL {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            format!("ask for 1 to {MAX_URLS_PER_CALL} part numbers at a time"),
        ));
    }
    let session = load_own(state, user_id, id).await?;
    if let Some(bad) = numbers
        .iter()
        .find(|n| !(1..=session.part_count).contains(*n))
    {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            format!("part {bad} is outside 1..{}", session.part_count),
        ));
    }
    if session.state != sessions::PENDING {
        return Err(AppError::conflict(
            ErrorCode::Conflict,
            format!(
                "this upload is {}: it takes no more parts",
                view(&session, Vec::new()).state
            ),
        ));
    }
    let expires = chrono::Utc::now().timestamp() + PART_URL_LIFETIME.as_secs() as i64;
    let expires_at = chrono::DateTime::from_timestamp(expires, 0)
        .expect("a near-future timestamp is in range")
        .naive_utc();
    let tokens = PartTokens::new(&state.settings.auth.jwt_secret);
    let mut urls = Vec::with_capacity(numbers.len());
    for part_number in numbers {
        let url = match state
            .store
            .direct_part_url(target(&session), part_number, PART_URL_LIFETIME)
            .await?
        {
            Some(url) => url,
            None => format!(
                "{base_url}/api/uploads/{}/parts/{part_number}?token={}",
                session.id,
                tokens.issue(&session.id, part_number, expires)
            ),
        };
        urls.push(PartUrl {
            part_number,
            url,
            expires_at,
        });
    }
    Ok(urls)
}

/// `DELETE /api/uploads/{id}`: ends a live session and deletes what it stored. Ending one
/// that ended already is not an error.
pub async fn abort(state: &AppState, user_id: i32, id: &str) -> Result<(), AppError> {
    let owned = id.to_owned();
    let ended = state
        .db
        .write(move |conn| Ok(sessions::abort(conn, &owned, user_id)?))
        .await?;
    if let Some(session) = ended {
        state.store.direct_abort(target(&session)).await?;
    }
    Ok(())
}

/// `POST /api/uploads/{id}/complete`.
pub async fn complete(
    state: &AppState,
    user_id: i32,
    id: &str,
    sent: Vec<SentPart>,
) -> Result<UploadView, AppError> {
    let waited_since = std::time::Instant::now();
    loop {
        let session = load_own(state, user_id, id).await?;
        match session.state.as_str() {
            sessions::READY | sessions::ATTACHED => return Ok(view(&session, Vec::new())),
            sessions::FAILED => return Err(failure_of(&session)),
            sessions::EXPIRED => {
                return Err(AppError::conflict(
                    ErrorCode::Conflict,
                    "this upload has expired or was cancelled: start a new one",
                ));
            }
            sessions::COMPLETING if now() - session.updated_at < ABANDONED_COMPLETE => {
                // Another call is checking it: answer what it finds.
                if waited_since.elapsed() > COMPLETE_WAIT {
                    return Err(AppError::conflict(
                        ErrorCode::Conflict,
                        "this upload is being completed by another request; ask again",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            from => {
                let (owned, from) = (session.id.clone(), from.to_owned());
                let claimed = state
                    .db
                    .write(move |conn| {
                        Ok(sessions::transition(
                            conn,
                            &owned,
                            &from,
                            sessions::COMPLETING,
                        )?)
                    })
                    .await?;
                if !claimed {
                    continue;
                }
                return run_complete(state, session, sent).await;
            }
        }
    }
}

/// The error a failed upload's `complete` answered, answered again.
fn failure_of(session: &UploadSession) -> AppError {
    match session.failure.as_deref() {
        Some("unsupported_file_type") => AppError::UnsupportedFileType(
            "the stored file's type is not accepted; it was deleted".into(),
        ),
        _ => size_mismatch("the stored file did not have the declared size; it was deleted"),
    }
}

/// The checks of a claimed (`completing`) session. Whatever happens, the session leaves
/// `completing`: back to `pending` when the client can still fix it (parts missing, a
/// store that does not answer), `failed` (object deleted) when the bytes are wrong.
async fn run_complete(
    state: &AppState,
    session: UploadSession,
    sent: Vec<SentPart>,
) -> Result<UploadView, AppError> {
    match check_and_finish(state, &session, &sent).await {
        Ok(view) => Ok(view),
        Err(Outcome::Retry(e)) => {
            let id = session.id.clone();
            state
                .db
                .write(move |conn| {
                    Ok(sessions::transition(
                        conn,
                        &id,
                        sessions::COMPLETING,
                        sessions::PENDING,
                    )?)
                })
                .await?;
            Err(e)
        }
        Err(Outcome::Failed(e)) => {
            let _ = state.store.direct_abort(target(&session)).await;
            let (id, code) = (session.id.clone(), e.code().as_str());
            state
                .db
                .write(move |conn| Ok(sessions::mark_failed(conn, &id, code)?))
                .await?;
            state.metrics.upload_refused(e.code());
            Err(e)
        }
    }
}

enum Outcome {
    /// The session goes back to `pending`.
    Retry(AppError),
    /// The session fails; what it stored is deleted.
    Failed(AppError),
}

impl From<AppError> for Outcome {
    fn from(e: AppError) -> Self {
        Outcome::Retry(e)
    }
}

async fn check_and_finish(
    state: &AppState,
    session: &UploadSession,
    sent: &[SentPart],
) -> Result<UploadView, Outcome> {
    let store = &state.store;
    // The object exists already when an earlier call made it and then failed (a store
    // that stopped answering): its parts are gone, the checks below are what is left.
    // (A single presigned PutObject's object is its one part: checked below likewise.)
    if store.head(&session.object_key).await?.is_none() {
        let stored = store.direct_parts(target(session)).await?;
        let missing: Vec<i32> = (1..=session.part_count)
            .filter(|n| !stored.iter().any(|p| p.part_number == *n))
            .collect();
        if !missing.is_empty() {
            return Err(Outcome::Retry(AppError::conflict(
                ErrorCode::UploadIncomplete,
                format!("parts not stored yet: {missing:?}"),
            )));
        }
        // The client's list must name every part with the ETag the store gave it: a part sent
        // again since (a retry racing the first try) must not be completed unnoticed. (A store
        // whose listing has no ETags, as s3s-fs: the client's is taken, sizes checked all the
        // same.)
        let mut parts: Vec<StoredPart> = Vec::with_capacity(stored.len());
        for mut part in stored {
            if !(1..=session.part_count).contains(&part.part_number) {
                continue;
            }
            let named = sent.iter().find(|s| s.part_number == part.part_number);
            let matches = named.is_some_and(|s| {
                part.etag.is_empty() || s.etag.trim_matches('"') == part.etag.trim_matches('"')
            });
            if !matches {
                return Err(Outcome::Retry(AppError::conflict(
                    ErrorCode::UploadIncomplete,
                    format!(
                        "part {} is not in the list with the ETag the store holds",
                        part.part_number
                    ),
                )));
            }
            if part.etag.is_empty()
                && let Some(named) = named
            {
                part.etag = named.etag.clone();
            }
            parts.push(part);
        }
        if let Some(bad) = parts
            .iter()
            .find(|p| p.size as i64 != session.part_len(p.part_number))
        {
            return Err(Outcome::Failed(size_mismatch(format!(
                "part {} has {} bytes, not {}; the upload is deleted",
                bad.part_number,
                bad.size,
                session.part_len(bad.part_number)
            ))));
        }
        store.direct_finish(target(session), &parts).await?;
    }
    let size = store.head(&session.object_key).await?;
    if size != Some(session.file_size as u64) {
        return Err(Outcome::Failed(size_mismatch(format!(
            "the stored file has {} bytes, not the declared {}; it is deleted",
            size.unwrap_or(0),
            session.file_size
        ))));
    }
    let head = store
        .read_head(&session.object_key, SNIFF_BYTES)
        .await?
        .unwrap_or_default();
    let sniffed = sniff(
        &head,
        session.file_size as usize <= SNIFF_BYTES,
        &session.file_name,
    );
    if !state.upload_rules.allows(&sniffed.mime) {
        return Err(Outcome::Failed(AppError::UnsupportedFileType(format!(
            "files of type {} are not accepted; the upload is deleted",
            sniffed.mime
        ))));
    }
    let strip =
        ImageKind::of_mime(&sniffed.mime).filter(|_| state.upload_rules.strip_image_metadata);
    let rewritten = match strip {
        Some(kind) => strip_stored(state, session, kind, &sniffed).await?,
        None => None,
    };
    let inline = rewritten.is_some() || session.file_size as u64 <= INLINE_HASH_LIMIT;
    let sha256 = if let Some(rewritten) = &rewritten {
        Some(rewritten.sha256.clone())
    } else if inline {
        match store.sha256(&session.object_key).await? {
            Some((size, hash)) if size == session.file_size as u64 => Some(hash),
            _ => {
                return Err(Outcome::Failed(size_mismatch(
                    "the stored file changed while it was checked; it is deleted",
                )));
            }
        }
    } else {
        None
    };
    let expires_at = now() + ttl(state);
    let (id, mime, hash) = (session.id.clone(), sniffed.mime.clone(), sha256.clone());
    let new_object = rewritten.as_ref().map(|r| (r.key.clone(), r.size as i64));
    let ready = state
        .db
        .write(move |conn| {
            let ready = sessions::Ready {
                content_type: &mime,
                sha256: hash.as_deref(),
                rewritten: new_object.as_ref().map(|(key, size)| (key.as_str(), *size)),
            };
            Ok(sessions::mark_ready(conn, &id, ready, expires_at)?)
        })
        .await?;
    // Of the two objects, the one no row names goes (or, if this fails, the orphan sweep
    // takes it).
    if let Some(rewritten) = &rewritten {
        let unused = if ready {
            &session.object_key
        } else {
            &rewritten.key
        };
        if let Err(e) = state.store.delete(unused).await {
            tracing::warn!(error = %e, "deleting a replaced direct upload object failed");
        }
    }
    if !ready {
        // Expired by the sweeper meanwhile: what it stored is being deleted.
        return Err(Outcome::Retry(AppError::conflict(
            ErrorCode::Conflict,
            "this upload expired while it was completed",
        )));
    }
    if !inline {
        spawn_hash(
            state.clone(),
            session.id.clone(),
            session.object_key.clone(),
        );
    }
    let mut done = session.clone();
    if let Some(rewritten) = rewritten {
        done.object_key = rewritten.key;
        done.stored_size = Some(rewritten.size as i64);
    }
    state.metrics.upload_stored(done.kept_size() as u64);
    done.state = sessions::READY.to_owned();
    done.content_type = Some(sniffed.mime);
    done.sha256 = sha256;
    done.expires_at = expires_at;
    Ok(view(&done, Vec::new()))
}

/// A stored image rewritten without its metadata.
struct Rewritten {
    key: String,
    size: u64,
    sha256: String,
}

/// Location and camera metadata leaves a direct upload as it leaves a server upload
/// (`media::strip`), here at `complete`: the object is read once to see whether it carries
/// any (a JPEG only as far as its first scan), and only then streamed through the filter
/// into a new object, which the session takes over. Never more than a chunk in memory.
async fn strip_stored(
    state: &AppState,
    session: &UploadSession,
    kind: ImageKind,
    sniffed: &Sniffed,
) -> Result<Option<Rewritten>, AppError> {
    let store = &state.store;
    let vanished = || AppError::Internal(anyhow::anyhow!("{} vanished", session.object_key));
    let stored = store.get_stream(&session.object_key).await?;
    if !media::carries_metadata(kind, stored.ok_or_else(vanished)?).await? {
        return Ok(None);
    }
    let stored = store.get_stream(&session.object_key).await?;
    let key = store.new_staging_key();
    let presentation = Presentation::of(&session.file_name, &sniffed.mime);
    let mut kept = Kept::new(media::strip(kind, stored.ok_or_else(vanished)?));
    store.put_stream(&key, &presentation, &mut kept).await?;
    let (size, sha256) = kept.finish();
    Ok(Some(Rewritten { key, size, sha256 }))
}

/// Hashes a large file's stored bytes after `complete` has answered (a streaming GET) and
/// records the hash on the session and, if attached meanwhile, on its file. A failure is
/// logged; the file keeps `sha256: null` (`chatserver verify` reports such rows).
fn spawn_hash(state: AppState, session_id: String, key: String) {
    tokio::spawn(async move {
        match state.store.sha256(&key).await {
            Ok(Some((_, hash))) => {
                let recorded = state
                    .db
                    .write(move |conn| Ok(sessions::set_sha256(conn, &session_id, &key, &hash)?))
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "recording a direct upload's hash failed");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "hashing a direct upload failed"),
        }
    });
}

// ---------------------------------------------------------------------------------------
// Attaching to a message

/// Claims the uploads `ids` (in this order) for a message of `user_id` in `channel_id`:
/// each must be the caller's, `ready`, of this channel and not attached before; else
/// `400 invalid_upload` (and the caller's transaction, which this runs in, rolls back).
pub fn claim_for_message(
    conn: &mut AnyConnection,
    user_id: i32,
    channel_id: i32,
    ids: &[String],
) -> Result<Vec<(String, StoredFile)>, AppError> {
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(session) = sessions::claim_for_message(conn, id, user_id, channel_id)? else {
            return Err(AppError::bad_request(
                ErrorCode::InvalidUpload,
                format!("upload {id:?} is not a ready upload of yours for this channel"),
            ));
        };
        let size = session.kept_size() as u64;
        claimed.push((
            session.id.clone(),
            StoredFile {
                key: session.object_key,
                file_name: session.file_name,
                content_type: session.content_type.unwrap_or_default(),
                size,
                sha256: session.sha256.unwrap_or_default(),
            },
        ));
    }
    Ok(claimed)
}

// ---------------------------------------------------------------------------------------
// The local store's part route

/// Signed, expiring tokens for the local store's part URLs: `{session}.{part}.{expires}.{mac}`
/// with an HMAC-SHA256 keyed from the server secret (a key of its own, as download links
/// have), so any instance sharing `JWT_SECRET` accepts them.
pub struct PartTokens {
    key: Vec<u8>,
}

impl PartTokens {
    pub fn new(secret: &Secret) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret.expose()).expect("HMAC takes any key size");
        mac.update(b"chatserver direct upload parts v1");
        PartTokens {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(payload.as_bytes());
        mac
    }

    pub fn issue(&self, session_id: &str, part_number: i32, expires: i64) -> String {
        let payload = format!("{session_id}.{part_number}.{expires}");
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{mac}")
    }

    /// Whether `token` grants part `part_number` of `session_id` now.
    pub fn verify(&self, token: &str, session_id: &str, part_number: i32) -> bool {
        let Some((payload, mac)) = token.rsplit_once('.') else {
            return false;
        };
        let Ok(mac) = URL_SAFE_NO_PAD.decode(mac) else {
            return false;
        };
        if self.mac(payload).verify_slice(&mac).is_err() {
            return false;
        }
        let mut fields = payload.split('.');
        let (Some(session), Some(part), Some(expires), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        session == session_id
            && part.parse() == Ok(part_number)
            && expires
                .parse::<i64>()
                .is_ok_and(|e| e >= chrono::Utc::now().timestamp())
    }
}

/// `PUT /api/uploads/{id}/parts/{n}?token=` (local store): streams the part to disk.
/// Returns the part's ETag. A body longer than the part is cut off (`413`, and `complete`
/// will find the part too long); the token is the only credential (as an S3 URL's
/// signature is).
pub async fn put_local_part(
    state: &AppState,
    id: &str,
    part_number: i32,
    token: &str,
    body: &mut dyn crate::storage::Body,
) -> Result<String, AppError> {
    if !PartTokens::new(&state.settings.auth.jwt_secret).verify(token, id, part_number) {
        return Err(AppError::Forbidden {
            code: ErrorCode::InvalidLink,
            message: "this part URL is forged or expired: ask for a new one".into(),
        });
    }
    let owned = id.to_owned();
    let session = state
        .db
        .run(move |conn| Ok(sessions::find(conn, &owned)?))
        .await?
        .ok_or(AppError::NotFound)?;
    if session.state != sessions::PENDING || !(1..=session.part_count).contains(&part_number) {
        return Err(AppError::conflict(
            ErrorCode::Conflict,
            "this upload takes no more parts",
        ));
    }
    let limit = session.part_len(part_number) as u64;
    let (size, etag) = state
        .store
        .direct_put_part(&session.id, part_number, limit, body)
        .await?;
    if size > limit {
        return Err(AppError::BodyTooLarge(format!(
            "part {part_number} has at most {limit} bytes"
        )));
    }
    Ok(etag)
}

// ---------------------------------------------------------------------------------------
// The sweeper's part

/// Expires live sessions past their expiry (pending ones not completed in time, ready ones
/// not attached in time): each is claimed (`expired`, which gives its bytes back), then
/// what it stored is deleted: the multipart upload aborted, the parts and the object
/// removed. A deletion that fails is left to the orphan sweep and the stale-upload abort,
/// which no longer count the session as live. Also forgets long-ended sessions.
pub async fn expire_sessions(state: &Sweeper) -> Result<usize, AppError> {
    let due = state
        .db
        .run(|conn| Ok(sessions::due_to_expire(conn, now(), EXPIRE_BATCH)?))
        .await?;
    let mut expired = 0;
    for session in due {
        let (id, from) = (session.id.clone(), session.state.clone());
        let claimed = state
            .db
            .write(move |conn| Ok(sessions::transition(conn, &id, &from, sessions::EXPIRED)?))
            .await?;
        if !claimed {
            continue;
        }
        if let Err(e) = state.store.direct_abort(target(&session)).await {
            tracing::warn!(error = %e, "deleting an expired upload failed; the orphan sweep will");
        }
        tracing::info!(upload = %session.id, state = %session.state, "expired a direct upload");
        expired += 1;
    }
    let before = now() - FORGET_ENDED_AFTER;
    state
        .db
        .write(move |conn| Ok(sessions::delete_ended(conn, before)?))
        .await?;
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_keep_files_within_ten_thousand_parts() {
        let mib = 1024 * 1024;
        assert_eq!(part_size_for(100 * mib, 8 * mib), 8 * mib);
        let huge = 200 * 1024 * mib;
        let size = part_size_for(huge, 8 * mib);
        assert!(huge.div_ceil(size) <= MAX_PARTS);
        assert_eq!(size % mib, 0);
    }

    #[test]
    fn part_tokens_grant_one_part_of_one_session_until_they_expire() {
        let secret =
            crate::config::Settings::from_lookup(|k| (k == "JWT_SECRET").then(|| "s".repeat(40)))
                .unwrap()
                .auth
                .jwt_secret;
        let tokens = PartTokens::new(&secret);
        let later = chrono::Utc::now().timestamp() + 60;
        let token = tokens.issue("abc", 2, later);
        assert!(tokens.verify(&token, "abc", 2));
        assert!(!tokens.verify(&token, "abc", 3));
        assert!(!tokens.verify(&token, "abd", 2));
        assert!(!tokens.verify(&format!("{token}x"), "abc", 2));
        let stale = tokens.issue("abc", 2, chrono::Utc::now().timestamp() - 1);
        assert!(!tokens.verify(&stale, "abc", 2));
    }
}
