//! Safe retries: `Idempotency-Key` on REST posts, `client_id` on the socket's messages.
//!
//! As Stripe does and draft-ietf-httpapi-idempotency-key-header describes: the first request
//! with a key claims it in the database (`db::idempotency`; the primary key decides races,
//! across instances), does the work, and stores its answer in the same transaction as the
//! work (`Answer::record`), so a crash can never leave the work done without its answer, nor
//! the reverse. A request with a key already claimed gets, per the user who sent it:
//! - the stored answer again, with `Idempotent-Replayed: true`, when the first one is done and
//!   asked the same thing (same fingerprint);
//! - `422 idempotency_key_reused` when the key was used for a different request;
//! - `409 idempotency_key_in_flight` with `Retry-After` while the first is still running.
//!
//! A request that fails (any error answer) releases its key: nothing it did was committed,
//! because the work and the answer commit together, so a retry may do it afresh (perhaps
//! after fixing the request). Only a committed answer is kept, and it is kept whatever
//! happens after the commit (a lost connection, a failed release), so a retry after an
//! unknown outcome replays instead of doing the work twice. A claim left in flight by a
//! crash is taken over after `ABANDONED_AFTER`; the crashed request can then no longer
//! complete (its completion names its claim), so even that race yields one result. Keys
//! expire `KEY_TTL` after their first use; the sweeper (`gc`) deletes them.
//!
//! Reusable by any handler: validate the key early ([`key_of`]), build a [`Fingerprint`] of
//! what the request asks, and run the work with [`run`], recording its answer with the
//! [`Completion`] it is given inside the transaction that does the work.

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use chrono::TimeDelta;
use sha2::{Digest, Sha256};

use crate::db::idempotency::{self as store, Claimed, Clock, KeyId};
use crate::db::{AnyConnection, Db, models::now};
use crate::error::{AppError, ErrorCode};

/// The request header that carries a key.
pub const HEADER: &str = "Idempotency-Key";
/// Set to `true` on an answer that is a replay of the first one.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
/// Keys live this long after their first use.
pub const KEY_TTL: TimeDelta = TimeDelta::hours(24);
/// An in-flight claim this old was abandoned (its instance crashed): a retry takes it over.
/// Longer than any request runs (an upload body stalls for at most BODY_IDLE_TIMEOUT).
pub const ABANDONED_AFTER: TimeDelta = TimeDelta::minutes(5);
/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A key's namespace: REST keys and socket `client_id`s never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Http,
    Socket,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Http => "http",
            Scope::Socket => "ws",
        }
    }
}

/// What a request asks, hashed: the same key for a different request is refused.
pub struct Fingerprint(Sha256);

impl Fingerprint {
    /// Starts with the method and the path (say `"POST"`, `"/api/channels/3/messages"`).
    pub fn new(method: &str, path: &str) -> Self {
        Fingerprint(Sha256::new())
            .part(method.as_bytes())
            .part(path.as_bytes())
    }

    /// Adds a part of the request; length-prefixed, so parts cannot run into each other.
    pub fn part(mut self, bytes: &[u8]) -> Self {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    fn hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The request's `Idempotency-Key`, if it has one: 1 to 255 visible ASCII characters, and
/// only one such header; otherwise `400 invalid_idempotency_key`.
pub fn key_of(req: &HttpRequest) -> Result<Option<String>, AppError> {
    let mut values = req.headers().get_all(HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        AppError::bad_request(ErrorCode::InvalidIdempotencyKey, format!("{HEADER} {why}"))
    };
    if values.next().is_some() {
        return Err(invalid("must be given once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(invalid(&format!(
            "must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// A claim's handle, given to the work so that it records its answer in its transaction.
#[derive(Debug, Clone)]
pub struct Completion {
    id: KeyId,
    token: String,
}

impl Completion {
    /// Stores `body` as the key's answer. Call inside the transaction that does the work: if
    /// the claim is no longer this request's (taken over as abandoned), this fails, and the
    /// work rolls back with it.
    pub fn record(
        &self,
        conn: &mut AnyConnection,
        status: StatusCode,
        body: &serde_json::Value,
    ) -> Result<(), AppError> {
        let body = body.to_string();
        if store::complete(conn, &self.id, &self.token, status.as_u16().into(), &body)? {
            Ok(())
        } else {
            Err(AppError::IdempotencyKeyInFlight)
        }
    }
}

/// How a work that is run once per key answers: rendered inside its transaction (the body
/// stored is the body sent), from the value the work produced.
pub struct Answer<T> {
    completion: Completion,
    status: StatusCode,
    render: Box<dyn FnOnce(&T) -> serde_json::Value + Send>,
}

impl<T> Answer<T> {
    pub fn new(
        completion: Completion,
        status: StatusCode,
        render: impl FnOnce(&T) -> serde_json::Value + Send + 'static,
    ) -> Self {
        Answer {
            completion,
            status,
            render: Box::new(render),
        }
    }

    /// Renders and stores the answer; returns the body to send.
    pub fn record(
        self,
        conn: &mut AnyConnection,
        value: &T,
    ) -> Result<serde_json::Value, AppError> {
        let body = (self.render)(value);
        self.completion.record(conn, self.status, &body)?;
        Ok(body)
    }
}

/// A key this request holds in flight. Released (deleted) when the request fails or is
/// dropped before settling; kept once the work succeeded.
pub struct Claim {
    db: Db,
    completion: Completion,
    settled: bool,
}

impl Claim {
    pub fn completion(&self) -> Completion {
        self.completion.clone()
    }

    /// The work succeeded: its answer is stored.
    pub fn keep(mut self) {
        self.settled = true;
    }

    /// The work failed: the key may be used again. Never fails the request (an unreleased
    /// claim is taken over once abandoned).
    pub async fn release(mut self) {
        self.settled = true;
        release(self.db.clone(), self.completion.clone()).await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(release(self.db.clone(), self.completion.clone()));
        }
    }
}

async fn release(db: Db, completion: Completion) {
    let Completion { id, token } = completion;
    if let Err(e) = db
        .write(move |conn| Ok(store::release(conn, &id, &token)?))
        .await
    {
        tracing::warn!(error = ?e, "could not release an idempotency key; it lapses when abandoned");
    }
}

/// What claiming a key found, when the request is not refused.
pub enum Outcome {
    /// Do the work.
    Proceed(Claim),
    /// Done before: answer this again.
    Replay { status: StatusCode, body: String },
}

/// Claims `key` of `user_id` for the request `fingerprint` describes; `409
/// idempotency_key_in_flight` while another request holds it, `422 idempotency_key_reused`
/// when it was used for a different request.
pub async fn claim(
    db: &Db,
    user_id: i32,
    scope: Scope,
    key: String,
    fingerprint: Fingerprint,
) -> Result<Outcome, AppError> {
    let id = KeyId {
        user_id,
        scope: scope.as_str(),
        key,
    };
    let fingerprint = fingerprint.hex();
    let now = now();
    let clock = Clock {
        now,
        expired_before: now - KEY_TTL,
        abandoned_before: now - ABANDONED_AFTER,
    };
    let claim_id = id.clone();
    let claimed = db
        .write(move |conn| Ok(store::claim(conn, &claim_id, &fingerprint, clock)?))
        .await?;
    match claimed {
        Claimed::Mine { token } => Ok(Outcome::Proceed(Claim {
            db: db.clone(),
            completion: Completion { id, token },
            settled: false,
        })),
        Claimed::Done { status, body } => Ok(Outcome::Replay {
            status: u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK),
            body,
        }),
        Claimed::InFlight => Err(AppError::IdempotencyKeyInFlight),
        Claimed::Mismatch => Err(AppError::Unprocessable {
            code: ErrorCode::IdempotencyKeyReused,
            message: "this idempotency key was used for a different request".into(),
        }),
    }
}

/// Runs `work` once per key (when there is one, else just runs it): the work is given the
/// [`Completion`] to record its answer with, inside its transaction. A repeat gets the first
/// answer again, marked `Idempotent-Replayed: true`.
pub async fn run<F, Fut>(
    db: &Db,
    user_id: i32,
    key: Option<String>,
    fingerprint: Fingerprint,
    work: F,
) -> Result<HttpResponse, AppError>
where
    F: FnOnce(Option<Completion>) -> Fut,
    Fut: Future<Output = Result<HttpResponse, AppError>>,
{
    let Some(key) = key else {
        return work(None).await;
    };
    match claim(db, user_id, Scope::Http, key, fingerprint).await? {
        Outcome::Replay { status, body } => Ok(HttpResponse::build(status)
            .insert_header((REPLAYED_HEADER, HeaderValue::from_static("true")))
            .insert_header((header::CONTENT_TYPE, mime::APPLICATION_JSON))
            .body(body)),
        Outcome::Proceed(claim) => {
            let result = work(Some(claim.completion())).await;
            match &result {
                Ok(_) => claim.keep(),
                Err(_) => claim.release().await,
            }
            result
        }
    }
}
