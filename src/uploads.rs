//! The upload pipeline: multipart part -> sniff + limit + hash -> store -> (caller) rows.
//!
//! Each file part streams straight into the store. Its first bytes decide its type (never
//! the declared type or name), a counter enforces the size limit while the body streams, and
//! a hasher sees every byte. Objects stored for a request are tracked by `PendingObjects`,
//! which deletes them unless the caller commits their rows.

use std::cell::Cell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::error::PayloadError;
use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::chat::{is_invisible_name, is_unsafe_display_char, normalize_name};
pub use crate::db::models::StoredFile;
use crate::db::{self, Db};
use crate::error::{AppError, ErrorCode};
use crate::media::{self, ImageKind};
use crate::metrics::Metrics;
use crate::storage::{Presentation, Store};

/// How many leading bytes decide the type.
const SNIFF_BYTES: usize = 8 * 1024;
/// At most this many bytes may arrive while looking for the next part's headers.
const PART_HEADER_BUDGET: usize = 256 * 1024;
pub const MAX_FILE_PARTS: usize = 10;
const MAX_FILE_NAME_CHARS: usize = 255;

/// What the settings allow.
#[derive(Debug, Clone)]
pub struct UploadRules {
    pub max_file_bytes: u64,
    pub allowed_types: Vec<String>,
    /// A body that sends nothing for this long is cut off with 408.
    pub body_idle_timeout: Duration,
    /// `STRIP_IMAGE_METADATA`: JPEG, PNG and WebP lose their metadata on the way in.
    pub strip_image_metadata: bool,
}

impl UploadRules {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        UploadRules {
            max_file_bytes: settings.limits.max_file_size_mb * 1024 * 1024,
            allowed_types: settings.limits.allowed_file_types.clone(),
            body_idle_timeout: Duration::from_secs(settings.limits.body_idle_timeout_seconds),
            strip_image_metadata: settings.media.strip_image_metadata,
        }
    }

    /// `type/*` entries allow a family, except the types that browsers run as documents
    /// (HTML, SVG, XML): those must be listed by their exact name.
    pub fn allows(&self, mime: &str) -> bool {
        self.allowed_types.iter().any(|allowed| {
            allowed == mime
                || (!is_active_content(mime)
                    && allowed
                        .strip_suffix('*')
                        .is_some_and(|family| family.ends_with('/') && mime.starts_with(family)))
        })
    }
}

fn is_active_content(mime: &str) -> bool {
    matches!(
        mime,
        "text/html" | "image/svg+xml" | "text/xml" | "application/xml" | "application/xhtml+xml"
    )
}

// ---------------------------------------------------------------------------------------
// Uploads in flight

/// How many uploads each user has in flight on this instance, capped: a client cannot tie
/// up the server with dozens of slow bodies. Per instance, like the other rate limits: a
/// user spread over N instances may have N times as many.
#[derive(Clone)]
pub struct UploadSlots {
    per_user: usize,
    held: Arc<Mutex<HashMap<i32, usize>>>,
}

/// One upload's place; given back when dropped.
pub struct UploadSlot {
    slots: UploadSlots,
    user_id: i32,
}

impl UploadSlots {
    pub fn new(per_user: usize) -> Self {
        UploadSlots {
            per_user: per_user.max(1),
            held: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, usize>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uploads of `user_id` in flight on this instance.
    pub fn held(&self, user_id: i32) -> usize {
        self.lock().get(&user_id).copied().unwrap_or(0)
    }

    /// A place for one more upload of `user_id`, or `429 rate_limited`.
    pub fn take(&self, user_id: i32) -> Result<UploadSlot, AppError> {
        let mut held = self.lock();
        let count = held.entry(user_id).or_default();
        if *count >= self.per_user {
            return Err(AppError::RateLimited {
                retry_after_seconds: 1,
            });
        }
        *count += 1;
        Ok(UploadSlot {
            slots: self.clone(),
            user_id,
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if let Some(count) = held.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.user_id);
            }
        }
    }
}

/// Runs an upload's handler, counting its refusal (or failure) by error code.
pub async fn counting_refusals<T>(
    metrics: &Metrics,
    upload: impl Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    let result = upload.await;
    if let Err(e) = &result {
        metrics.upload_refused(e.code());
    }
    result
}

// ---------------------------------------------------------------------------------------
// Quota

/// Bytes an upload request may store under its user's `USER_QUOTA_MB`, reserved in the
/// database before any byte is stored (so concurrent uploads of one user, on any instance,
/// cannot together overshoot), and released when the request ends. The files a request
/// commits are counted in the user's used bytes by the same transaction that records them,
/// so between that commit and the release they count twice: stricter, never looser.
pub struct QuotaReservation {
    db: Db,
    id: Option<i64>,
    /// What the request may store, `None` when there is no quota.
    budget: Option<u64>,
}

impl QuotaReservation {
    /// A request that declares its `Content-Length` reserves that many bytes (the multipart
    /// envelope counts too: a few hundred bytes); one that does not reserves whatever the
    /// user has left, up to what one request may carry. `413 quota_exceeded` when that is
    /// more than is left (or nothing is).
    pub async fn take(
        db: &Db,
        quota: Option<u64>,
        user_id: i32,
        req: &HttpRequest,
        rules: &UploadRules,
    ) -> Result<QuotaReservation, AppError> {
        let Some(quota) = quota else {
            return Ok(QuotaReservation {
                db: db.clone(),
                id: None,
                budget: None,
            });
        };
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let most_one_request = rules.max_file_bytes * MAX_FILE_PARTS as u64;
        let (want, at_least) = match declared {
            Some(length) => (length, length),
            None => (most_one_request, 1),
        };
        let (want, at_least, quota) = (clamp(want), clamp(at_least), clamp(quota));
        let reserved = db
            .write(move |conn| Ok(db::quota::reserve(conn, user_id, want, at_least, quota)?))
            .await?;
        match reserved {
            Some((id, bytes)) => Ok(QuotaReservation {
                db: db.clone(),
                id: Some(id),
                budget: Some(bytes as u64),
            }),
            None => Err(quota_exceeded(quota as u64)),
        }
    }

    pub fn budget(&self) -> Option<u64> {
        self.budget
    }
}

fn clamp(bytes: u64) -> i64 {
    bytes.min(i64::MAX as u64) as i64
}

fn quota_exceeded(quota: u64) -> AppError {
    AppError::QuotaExceeded(format!(
        "this would take you over your storage quota of {} MB: delete some files first",
        quota / (1024 * 1024)
    ))
}

impl Drop for QuotaReservation {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let db = self.db.clone();
            // What a crash leaves, the sweeper releases after a few hours.
            tokio::spawn(async move {
                if let Err(e) = db
                    .write(move |conn| Ok(db::quota::release(conn, id)?))
                    .await
                {
                    tracing::warn!(error = %e, "releasing a quota reservation failed");
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading a multipart body

/// A multipart body read part by part, with bounded part headers and a body that must keep
/// moving, holding one of the user's upload slots.
pub struct UploadForm {
    multipart: Multipart,
    header_budget: Rc<Cell<Option<usize>>>,
    _slot: UploadSlot,
}

impl UploadForm {
    pub fn new(
        req: &HttpRequest,
        payload: web::Payload,
        rules: &UploadRules,
        slot: UploadSlot,
    ) -> Result<Self, AppError> {
        let is_form = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        if !is_form {
            return Err(AppError::bad_request(
                ErrorCode::BadRequest,
                "expected a multipart/form-data body",
            ));
        }
        let header_budget = Rc::new(Cell::new(None));
        let metered = HeaderBudget {
            inner: IdleTimeout::new(payload, rules.body_idle_timeout),
            budget: header_budget.clone(),
        };
        Ok(UploadForm {
            multipart: Multipart::new(req.headers(), metered),
            header_budget,
            _slot: slot,
        })
    }

    /// The next part, or `None` at the end of the body.
    pub async fn next_part(&mut self) -> Result<Option<Field>, AppError> {
        self.header_budget.set(Some(PART_HEADER_BUDGET));
        let next = self.multipart.next().await;
        self.header_budget.set(None);
        match next {
            None => Ok(None),
            Some(Ok(field)) => Ok(Some(field)),
            Some(Err(e)) => Err(multipart_error(e)),
        }
    }
}

/// The name of a form part (`Content-Disposition: form-data; name=...`).
pub fn part_name(field: &Field) -> &str {
    field.name().unwrap_or_default()
}

/// A small text part, read whole (it is bounded by `max_bytes`).
pub async fn read_text_part(field: &mut Field, max_bytes: usize) -> Result<String, AppError> {
    let mut text = BytesMut::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(multipart_error)?;
        if text.len() + chunk.len() > max_bytes {
            return Err(AppError::bad_request(
                ErrorCode::BadRequest,
                format!("the {:?} part is over {max_bytes} bytes", part_name(field)),
            ));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text.to_vec())
        .map_err(|_| AppError::bad_request(ErrorCode::BadRequest, "a text part is not UTF-8"))
}

fn multipart_error(e: MultipartError) -> AppError {
    match e {
        MultipartError::Payload(PayloadError::Overflow) => AppError::bad_request(
            ErrorCode::BadRequest,
            "multipart part headers are too large",
        ),
        MultipartError::Payload(PayloadError::Io(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            AppError::RequestTimeout("the upload sent nothing for too long".into())
        }
        MultipartError::Payload(PayloadError::Incomplete(_)) | MultipartError::Incomplete => {
            AppError::bad_request(ErrorCode::BadRequest, "the upload was interrupted")
        }
        other => AppError::bad_request(
            ErrorCode::BadRequest,
            format!("malformed multipart body: {other}"),
        ),
    }
}

/// Fails a body that makes no progress for `idle` while the server waits for it (a body
/// trickling a few bytes a minute would otherwise hold its buffers and slot for ever). Only
/// time spent waiting for the client counts: not the time the server spends storing what
/// it already has.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The last poll found nothing: the client is being waited for.
    waiting: bool,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }
}

impl<S> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.waiting {
            let next = tokio::time::Instant::now() + self.idle;
            self.deadline.as_mut().reset(next);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => {
                self.waiting = true;
                match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(
                        std::io::ErrorKind::TimedOut.into(),
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.waiting = false;
                ready
            }
        }
    }
}

/// Counts the bytes that arrive while the multipart parser looks for part headers and fails
/// the body past the budget, so endless headers cannot fill memory.
struct HeaderBudget<S> {
    inner: S,
    budget: Rc<Cell<Option<usize>>>,
}

impl<S> Stream for HeaderBudget<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next
            && let Some(remaining) = self.budget.get()
        {
            match remaining.checked_sub(chunk.len()) {
                Some(left) => self.budget.set(Some(left)),
                None => return Poll::Ready(Some(Err(PayloadError::Overflow))),
            }
        }
        next
    }
}

// ---------------------------------------------------------------------------------------
// Storing one file part

/// Streams one file part into the store under a new key.
pub async fn store_file_part(
    store: &Store,
    metrics: &Metrics,
    rules: &UploadRules,
    channel_id: i32,
    quota_left: Option<u64>,
    field: &mut Field,
) -> Result<StoredFile, AppError> {
    let file_name = clean_file_name(
        field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .unwrap_or_default(),
    )?;
    let (head, complete) = read_head(field).await?;
    let sniffed = sniff(&head, complete, &file_name);
    if !rules.allows(&sniffed.mime) {
        return Err(AppError::UnsupportedFileType(format!(
            "files of type {} are not accepted",
            sniffed.mime
        )));
    }
    let key = store.new_object_key(channel_id, sniffed.extension);
    let mut received = CheckedBody {
        head: Some(head),
        rest: field,
        rest_done: complete,
        size: 0,
        limit: rules.max_file_bytes,
        quota_left,
    };
    let presentation = Presentation::of(&file_name, &sniffed.mime);
    // The limits count what arrives (dropped metadata included: stripping must not let a
    // body run on without end); `file_size` and `sha256` describe what is kept.
    let strip = ImageKind::of_mime(&sniffed.mime).filter(|_| rules.strip_image_metadata);
    let (size, sha256) = match strip {
        Some(kind) => {
            let mut kept = Kept::new(media::strip(kind, &mut received));
            store.put_stream(&key, &presentation, &mut kept).await?;
            kept.finish()
        }
        None => {
            let mut kept = Kept::new(&mut received);
            store.put_stream(&key, &presentation, &mut kept).await?;
            kept.finish()
        }
    };
    metrics.upload_stored(size);
    Ok(StoredFile {
        key,
        file_name,
        content_type: sniffed.mime,
        size,
        sha256,
    })
}

/// Counts and hashes the bytes kept, as the store receives them.
pub(crate) struct Kept<S> {
    inner: S,
    size: u64,
    hasher: Sha256,
}

impl<S> Kept<S> {
    pub(crate) fn new(inner: S) -> Self {
        Kept {
            inner,
            size: 0,
            hasher: Sha256::new(),
        }
    }

    pub(crate) fn finish(self) -> (u64, String) {
        (self.size, hex::encode(self.hasher.finalize()))
    }
}

impl<S> Stream for Kept<S>
where
    S: Stream<Item = Result<Bytes, AppError>> + Unpin,
{
    type Item = Result<Bytes, AppError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            self.size += chunk.len() as u64;
            self.hasher.update(chunk);
        }
        next
    }
}

/// The first bytes of a part; `true` when that is the whole part.
async fn read_head(field: &mut Field) -> Result<(Bytes, bool), AppError> {
    let mut head = BytesMut::new();
    while head.len() < SNIFF_BYTES {
        match field.next().await {
            Some(chunk) => head.extend_from_slice(&chunk.map_err(multipart_error)?),
            None => return Ok((head.freeze(), true)),
        }
    }
    Ok((head.freeze(), false))
}

/// The part's bytes as they arrive: counted against the limit and the quota.
struct CheckedBody<'a> {
    head: Option<Bytes>,
    rest: &'a mut Field,
    /// The part has ended (a `Field` must not be polled past its end).
    rest_done: bool,
    size: u64,
    limit: u64,
    /// What the request's quota reservation has left for this file, if there is a quota.
    quota_left: Option<u64>,
}

impl Stream for CheckedBody<'_> {
    type Item = Result<Bytes, AppError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let chunk = match self.head.take() {
            Some(head) => head,
            None if self.rest_done => return Poll::Ready(None),
            None => match Pin::new(&mut *self.rest).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.rest_done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(multipart_error(e)))),
                Poll::Ready(Some(Ok(chunk))) => chunk,
            },
        };
        self.size += chunk.len() as u64;
        if self.quota_left.is_some_and(|left| self.size > left) {
            return Poll::Ready(Some(Err(AppError::QuotaExceeded(
                "this upload would take you over your storage quota".into(),
            ))));
        }
        if self.size > self.limit {
            let limit_mb = self.limit / (1024 * 1024);
            return Poll::Ready(Some(Err(AppError::PayloadTooLarge(format!(
                "a file may be at most {limit_mb} MB"
            )))));
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

// ---------------------------------------------------------------------------------------
// Objects stored for one request

/// The objects a request has stored so far, and their clean-up: `commit_with` records them
/// and keeps them, or deletes them if recording fails; if the request is dropped first,
/// they are deleted in the background. (What a crash leaves is the orphan sweep's.)
pub struct PendingObjects {
    store: Store,
    pub files: Vec<StoredFile>,
}

impl PendingObjects {
    pub fn new(store: Store) -> Self {
        PendingObjects {
            store,
            files: Vec::new(),
        }
    }

    /// Runs `record` (which checks the files and writes their rows) on the stored files:
    /// on success the objects are kept, on failure they are deleted before the error
    /// returns. No row without its object, no object without a row.
    pub async fn commit_with<T, F, Fut>(mut self, record: F) -> Result<T, AppError>
    where
        F: FnOnce(Vec<StoredFile>) -> Fut,
        Fut: Future<Output = Result<T, AppError>>,
    {
        match record(self.files.clone()).await {
            Ok(value) => {
                self.files.clear();
                Ok(value)
            }
            Err(e) => {
                self.discard().await;
                Err(e)
            }
        }
    }

    /// Deletes every object stored so far, and waits for it.
    async fn discard(mut self) {
        let files = std::mem::take(&mut self.files);
        delete_all(&self.store, files).await;
    }
}

impl Drop for PendingObjects {
    fn drop(&mut self) {
        let files = std::mem::take(&mut self.files);
        if !files.is_empty() {
            let store = self.store.clone();
            tokio::spawn(async move { delete_all(&store, files).await });
        }
    }
}

async fn delete_all(store: &Store, files: Vec<StoredFile>) {
    for file in files {
        if let Err(e) = store.delete(&file.key).await {
            // Left for the orphan sweep.
            tracing::warn!(key = %file.key, error = %e, "could not delete an uncommitted object");
        }
    }
}

/// An upload request's files, received within its user's quota: the reservation is taken
/// before any byte is stored, and must live until the files' rows are committed (drop it
/// after `PendingObjects::commit_with`).
pub async fn receive_files_within_quota(
    state: &crate::state::AppState,
    req: &HttpRequest,
    user_id: i32,
    form: &mut UploadForm,
    channel_id: i32,
) -> Result<(PendingObjects, QuotaReservation), AppError> {
    let quota = QuotaReservation::take(
        &state.db,
        state.settings.limits.user_quota_bytes,
        user_id,
        req,
        &state.upload_rules,
    )
    .await?;
    let pending = receive_files(
        form,
        &state.store,
        &state.metrics,
        &state.upload_rules,
        channel_id,
        &quota,
    )
    .await?;
    Ok((pending, quota))
}

/// Reads the remaining parts of `form` as files (each part must be named `file`) into the
/// store. On any failure the objects stored so far are deleted before the error returns.
pub async fn receive_files(
    form: &mut UploadForm,
    store: &Store,
    metrics: &Metrics,
    rules: &UploadRules,
    channel_id: i32,
    quota: &QuotaReservation,
) -> Result<PendingObjects, AppError> {
    let mut pending = PendingObjects::new(store.clone());
    let mut quota_left = quota.budget();
    let result = async {
        while let Some(mut field) = form.next_part().await? {
            if part_name(&field) != "file" {
                return Err(AppError::bad_request(
                    ErrorCode::BadRequest,
                    format!("unexpected form part {:?}", part_name(&field)),
                ));
            }
            if pending.files.len() == MAX_FILE_PARTS {
                return Err(AppError::bad_request(
                    ErrorCode::TooManyFiles,
                    format!("at most {MAX_FILE_PARTS} files per request"),
                ));
            }
            let stored =
                store_file_part(store, metrics, rules, channel_id, quota_left, &mut field).await?;
            quota_left = quota_left.map(|left| left.saturating_sub(stored.size));
            pending.files.push(stored);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(pending),
        Err(e) => {
            pending.discard().await;
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Types, names and keys

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub mime: String,
    pub extension: &'static str,
}

/// The type of a file from its first bytes. `complete` says `head` is the whole file (so a
/// multi-byte character cut at the end of `head` does not make text look binary).
pub fn sniff(head: &[u8], complete: bool, file_name: &str) -> Sniffed {
    let sniffed = |mime: &str, extension| Sniffed {
        mime: mime.to_owned(),
        extension,
    };
    if let Some(kind) = infer::get(head) {
        // infer accepts "GIF89a<script>..." as a GIF: markup in an image or text file makes
        // it a polyglot, refused as HTML.
        let family = kind.mime_type().split('/').next().unwrap_or_default();
        if matches!(family, "image" | "text") && markup_kind(head).is_some() {
            return sniffed("text/html", "html");
        }
        if let Some((mime, extension)) = media::sniff::refine(kind.mime_type(), head) {
            return sniffed(mime, extension);
        }
        return sniffed(kind.mime_type(), kind.extension());
    }
    if !looks_like_text(head, complete) {
        return sniffed("application/octet-stream", "bin");
    }
    if let Some(markup) = markup_kind(head) {
        return markup;
    }
    if file_name.to_ascii_lowercase().ends_with(".csv") {
        sniffed("text/csv", "csv")
    } else {
        sniffed("text/plain", "txt")
    }
}

/// Markup a browser would render as a document: HTML or SVG.
fn markup_kind(head: &[u8]) -> Option<Sniffed> {
    let window = &head[..head.len().min(4096)];
    let lower = String::from_utf8_lossy(window).to_ascii_lowercase();
    if lower.contains("<svg") {
        return Some(Sniffed {
            mime: "image/svg+xml".into(),
            extension: "svg",
        });
    }
    const HTML_MARKERS: [&str; 7] = [
        "<script",
        "<html",
        "<!doctype html",
        "<body",
        "<iframe",
        "<object",
        "<embed",
    ];
    HTML_MARKERS
        .iter()
        .any(|m| lower.contains(m))
        .then(|| Sniffed {
            mime: "text/html".into(),
            extension: "html",
        })
}

/// UTF-8 without NULs or control characters other than white space.
fn looks_like_text(head: &[u8], complete: bool) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A character cut in two by the end of the sniffed window.
        Err(e) if !complete && e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
}

/// The original name for display: its last path component in NFC, without control or
/// bidirectional-override characters, at most 255 characters (keeping the extension). No
/// name at all is "file"; a name of only invisible characters is refused
/// (`400 invalid_file_name`): it would show as a blank, unclickable card.
pub fn clean_file_name(raw: &str) -> Result<String, AppError> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = normalize_name(base)
        .chars()
        .filter(|c| !is_unsafe_display_char(*c))
        .collect();
    if !base.is_empty() && is_invisible_name(&cleaned) {
        return Err(AppError::bad_request(
            ErrorCode::InvalidFileName,
            "a file name made only of invisible characters is not accepted",
        ));
    }
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Ok("file".to_owned());
    }
    if cleaned.chars().count() <= MAX_FILE_NAME_CHARS {
        return Ok(cleaned.to_owned());
    }
    let extension = cleaned
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty() && ext.chars().count() <= 16);
    match extension {
        Some(ext) => {
            let keep = MAX_FILE_NAME_CHARS - ext.chars().count() - 1;
            let stem: String = cleaned.chars().take(keep).collect();
            Ok(format!("{stem}.{ext}"))
        }
        None => Ok(cleaned.chars().take(MAX_FILE_NAME_CHARS).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_cleaned_for_display() {
        let clean = |raw: &str| clean_file_name(raw).unwrap();
        assert_eq!(clean("../../etc/passwd"), "passwd");
        assert_eq!(clean("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(clean("a.php%00.jpg"), "a.php%00.jpg");
        assert_eq!(clean("evil\u{202e}gpj.exe"), "evilgpj.exe");
        assert_eq!(clean("nul\u{0}byte.txt"), "nulbyte.txt");
        assert_eq!(clean(".."), "file");
        assert_eq!(clean(""), "file");
        assert_eq!(clean("Rene\u{301}e.pdf"), "Ren\u{e9}e.pdf");
        let long = format!("{}.png", "a".repeat(300));
        let cleaned = clean(&long);
        assert_eq!(cleaned.chars().count(), 255);
        assert!(cleaned.ends_with(".png"));
    }

    #[test]
    fn invisible_file_names_are_refused() {
        for raw in ["\u{200B}", "dir/\u{3164}", " \u{FEFF} "] {
            let refused = clean_file_name(raw).unwrap_err();
            assert_eq!(refused.code(), ErrorCode::InvalidFileName, "{raw:?}");
        }
    }

    #[test]
    fn types_come_from_the_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png, true, "x.txt").mime, "image/png");
        assert_eq!(
            sniff(b"<html><body>hi</body></html>", true, "x.png").mime,
            "text/html"
        );
        assert_eq!(
            sniff(b"<svg onload=alert(1)>", true, "x.png").mime,
            "image/svg+xml"
        );
        assert_eq!(
            sniff(b"GIF89a<script>alert(1)</script>", true, "x.gif").mime,
            "text/html"
        );
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        assert_eq!(sniff(&elf, true, "x.jpg").mime, "application/x-executable");
        assert_eq!(sniff(b"a,b\n1,2\n", true, "data.csv").mime, "text/csv");
        assert_eq!(sniff("h\u{e9}llo".as_bytes(), true, "x").mime, "text/plain");
        assert_eq!(
            sniff(b"\0\x01\x02\x03", true, "x.txt").mime,
            "application/octet-stream"
        );
        // A character cut at the end of the window is still text.
        let cut = &"\u{e9}".as_bytes()[..1];
        assert_eq!(
            sniff(&[b"abc", cut].concat(), false, "x").mime,
            "text/plain"
        );
    }

    #[test]
    fn wildcards_never_allow_active_content() {
        let rules = UploadRules {
            max_file_bytes: 1,
            allowed_types: vec!["image/*".into(), "text/*".into()],
            body_idle_timeout: Duration::from_secs(1),
            strip_image_metadata: true,
        };
        assert!(rules.allows("image/png"));
        assert!(!rules.allows("image/svg+xml"));
        assert!(!rules.allows("text/html"));
        let explicit = UploadRules {
            max_file_bytes: 1,
            allowed_types: vec!["image/svg+xml".into()],
            body_idle_timeout: Duration::from_secs(1),
            strip_image_metadata: true,
        };
        assert!(explicit.allows("image/svg+xml"));
    }
}

/// Tests added for mutation testing (issue 21): what the tests above leave unchecked.
#[cfg(test)]
mod mutation_tests {
    use super::*;

    #[test]
    fn upload_slots_are_counted_per_user_and_given_back_when_dropped() {
        let slots = UploadSlots::new(2);
        let first = slots.take(1).unwrap();
        let second = slots.take(1).unwrap();
        assert_eq!(slots.held(1), 2);
        assert_eq!(
            slots.take(1).err().map(|e| e.code()),
            Some(ErrorCode::RateLimited)
        );
        // Another user has places of their own.
        let other = slots.take(2).unwrap();
        assert_eq!((slots.held(1), slots.held(2)), (2, 1));
        drop(first);
        assert_eq!(slots.held(1), 1);
        let third = slots.take(1).unwrap();
        drop((second, third, other));
        assert_eq!((slots.held(1), slots.held(2)), (0, 0));
        assert!(
            slots.lock().is_empty(),
            "no entry is kept for a user with none"
        );
        // Zero means one, never none.
        let one = UploadSlots::new(0);
        let held = one.take(3).unwrap();
        assert!(one.take(3).is_err());
        drop(held);
    }

    #[test]
    fn a_cut_character_is_text_only_when_the_window_is_not_the_whole_file() {
        let cut = [b"abc".as_slice(), &"\u{e9}".as_bytes()[..1]].concat();
        // The whole file ends in half a character: not UTF-8, so not text.
        assert_eq!(sniff(&cut, true, "x.txt").mime, "application/octet-stream");
        // Invalid bytes in the middle are never a cut character.
        let invalid = [b"ab".as_slice(), b"\xff", b"cd"].concat();
        assert_eq!(
            sniff(&invalid, false, "x.txt").mime,
            "application/octet-stream"
        );
        // Form feed and tab are text; other controls are not.
        assert_eq!(sniff(b"a\tb\x0cc\r\n", true, "x").mime, "text/plain");
        assert_eq!(sniff(b"a\x1bb", true, "x").mime, "application/octet-stream");
    }

    #[test]
    fn long_names_keep_only_a_short_extension() {
        let clean = |raw: &str| clean_file_name(raw).unwrap();
        // A name of exactly 255 characters is kept whole.
        let exact = format!("{}.pdf", "a".repeat(251));
        assert_eq!(clean(&exact), exact);
        // An extension of 16 characters is kept; one of 17 is not an extension.
        let sixteen = "e".repeat(16);
        let kept = clean(&format!("{}.{sixteen}", "a".repeat(300)));
        assert_eq!(kept.chars().count(), 255);
        assert!(kept.ends_with(&format!("a.{sixteen}")), "{kept}");
        let seventeen = "e".repeat(17);
        let long = format!("{}.{seventeen}", "a".repeat(300));
        assert_eq!(clean(&long), "a".repeat(255));
        // A trailing dot is no extension either.
        assert_eq!(clean(&format!("{}.", "a".repeat(300))), "a".repeat(255));
        assert_eq!(clean("."), "file");
        assert_eq!(clean(" report.pdf "), "report.pdf");
    }
}
