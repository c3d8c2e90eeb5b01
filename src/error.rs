//! The one error type of the API and its mapping to HTTP, in one place.
//!
//! Handlers return `Result<_, AppError>`; the status and the JSON body
//! `{"error": {"code", "message"}}` are decided here. Internal causes are logged with
//! their chain and never sent to clients.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Every code the API answers with, in errors and in WebSocket `error` frames. The table in
/// docs/api.md is checked against this list by a test (`tests/api/docs.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    InvalidJson,
    InvalidUsername,
    WeakPassword,
    InvalidDisplayName,
    InvalidChannelName,
    InvalidContent,
    InvalidFileName,
    Unauthorized,
    InvalidToken,
    InvalidCredentials,
    Forbidden,
    InvalidLink,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    UsernameTaken,
    AlreadyMember,
    Conflict,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    PayloadTooLarge,
    FileTooLarge,
    QuotaExceeded,
    TooManyFiles,
    TooManyReactions,
    UnsupportedFileType,
    SizeMismatch,
    UploadIncomplete,
    InvalidUpload,
    RateLimited,
    InternalError,
    StorageUnavailable,
    DatabaseUnavailable,
    // WebSocket `error` frames only.
    UnknownType,
    UnsupportedFrame,
}

impl ErrorCode {
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidUsername,
        ErrorCode::WeakPassword,
        ErrorCode::InvalidDisplayName,
        ErrorCode::InvalidChannelName,
        ErrorCode::InvalidContent,
        ErrorCode::InvalidFileName,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidToken,
        ErrorCode::InvalidCredentials,
        ErrorCode::Forbidden,
        ErrorCode::InvalidLink,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::UsernameTaken,
        ErrorCode::AlreadyMember,
        ErrorCode::Conflict,
        ErrorCode::IdempotencyKeyInFlight,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::PayloadTooLarge,
        ErrorCode::FileTooLarge,
        ErrorCode::QuotaExceeded,
        ErrorCode::TooManyFiles,
        ErrorCode::TooManyReactions,
        ErrorCode::UnsupportedFileType,
        ErrorCode::SizeMismatch,
        ErrorCode::UploadIncomplete,
        ErrorCode::InvalidUpload,
        ErrorCode::RateLimited,
        ErrorCode::InternalError,
        ErrorCode::StorageUnavailable,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::UnknownType,
        ErrorCode::UnsupportedFrame,
    ];

    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::WeakPassword => "weak_password",
            ErrorCode::InvalidDisplayName => "invalid_display_name",
            ErrorCode::InvalidChannelName => "invalid_channel_name",
            ErrorCode::InvalidContent => "invalid_content",
            ErrorCode::InvalidFileName => "invalid_file_name",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidLink => "invalid_link",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::AlreadyMember => "already_member",
            ErrorCode::Conflict => "conflict",
            ErrorCode::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::FileTooLarge => "file_too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::TooManyFiles => "too_many_files",
            ErrorCode::TooManyReactions => "too_many_reactions",
            ErrorCode::UnsupportedFileType => "unsupported_file_type",
            ErrorCode::SizeMismatch => "size_mismatch",
            ErrorCode::UploadIncomplete => "upload_incomplete",
            ErrorCode::InvalidUpload => "invalid_upload",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or breaks a validation rule (400).
    #[error("{message}")]
    BadRequest { code: ErrorCode, message: String },
    /// No, or an invalid, credential (401).
    #[error("{message}")]
    Unauthorized { code: ErrorCode, message: String },
    /// Authenticated but not allowed (403).
    #[error("{message}")]
    Forbidden { code: ErrorCode, message: String },
    /// Absent, or not visible to the caller (404). Never hints that something exists.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken (409).
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// A request with the same idempotency key is still running (409, with `Retry-After`).
    #[error("a request with this idempotency key is still in progress; retry later")]
    IdempotencyKeyInFlight,
    /// Well-formed but refused as a whole (422): an idempotency key reused for another
    /// request.
    #[error("{message}")]
    Unprocessable { code: ErrorCode, message: String },
    /// An upload over the size limit (413 file_too_large).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The upload would take the user past `USER_QUOTA_MB` (413 `quota_exceeded`).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A request body over its limit that is not an upload (413 payload_too_large).
    #[error("{0}")]
    BodyTooLarge(String),
    /// A known path asked with a method it does not take (405, with `Allow`).
    #[error("this path takes {allow}")]
    MethodNotAllowed { allow: String },
    #[error("{0}")]
    UnsupportedFileType(String),
    /// A request body that stopped arriving (408).
    #[error("{0}")]
    RequestTimeout(String),
    #[error("too many requests")]
    RateLimited { retry_after_seconds: u64 },
    /// The file store does not answer (503).
    #[error("storage unavailable")]
    StorageUnavailable(#[source] anyhow::Error),
    /// The database does not answer (503).
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] anyhow::Error),
    /// Anything else: a bug or an unexpected failure (500).
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError::Unauthorized {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::Forbidden {
            code: ErrorCode::Forbidden,
            message: message.into(),
        }
    }

    pub fn method_not_allowed(allow: String) -> Self {
        AppError::MethodNotAllowed { allow }
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::BadRequest { code, .. }
            | AppError::Unauthorized { code, .. }
            | AppError::Conflict { code, .. }
            | AppError::Unprocessable { code, .. }
            | AppError::Forbidden { code, .. } => *code,
            AppError::IdempotencyKeyInFlight => ErrorCode::IdempotencyKeyInFlight,
            AppError::NotFound => ErrorCode::NotFound,
            AppError::PayloadTooLarge(_) => ErrorCode::FileTooLarge,
            AppError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            AppError::BodyTooLarge(_) => ErrorCode::PayloadTooLarge,
            AppError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            AppError::UnsupportedFileType(_) => ErrorCode::UnsupportedFileType,
            AppError::RateLimited { .. } => ErrorCode::RateLimited,
            AppError::RequestTimeout(_) => ErrorCode::RequestTimeout,
            AppError::StorageUnavailable(_) => ErrorCode::StorageUnavailable,
            AppError::DatabaseUnavailable(_) => ErrorCode::DatabaseUnavailable,
            AppError::Internal(_) => ErrorCode::InternalError,
        }
    }
}

impl AppError {
    /// The JSON body clients get: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code(), "message": self.to_string() } })
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } | AppError::IdempotencyKeyInFlight => StatusCode::CONFLICT,
            AppError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::PayloadTooLarge(_)
            | AppError::BodyTooLarge(_)
            | AppError::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::UnsupportedFileType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::StorageUnavailable(_) | AppError::DatabaseUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::StorageUnavailable(cause)
            | AppError::DatabaseUnavailable(cause)
            | AppError::Internal(cause) => {
                tracing::error!(
                    code = self.code().as_str(),
                    cause = format!("{cause:#}"),
                    "request failed"
                );
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let AppError::RateLimited {
            retry_after_seconds,
        } = self
        {
            response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
        }
        if let AppError::IdempotencyKeyInFlight = self {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            // A dependency is away: worth retrying soon, not at once.
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        if let AppError::MethodNotAllowed { allow, .. } = self {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        if let AppError::Unauthorized { .. } = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(self.body())
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::NotFound => AppError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                AppError::conflict(ErrorCode::Conflict, "already exists")
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                AppError::DatabaseUnavailable(anyhow::anyhow!("{}", info.message()))
            }
            // SQLite's busy timeout ran out: another process holds the lock. Try again.
            Error::DatabaseError(_, info) if info.message().contains("database is locked") => {
                AppError::DatabaseUnavailable(anyhow::anyhow!("{}", info.message()))
            }
            other => AppError::Internal(other.into()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for AppError {
    fn from(err: diesel::r2d2::PoolError) -> Self {
        AppError::DatabaseUnavailable(err.into())
    }
}

/// Rejections from actix's extractors, answered in the API's error format.
pub mod extractors {
    use super::{AppError, ErrorCode};
    use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
    use actix_web::{HttpRequest, web};

    pub fn json_config() -> web::JsonConfig {
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|err, _req: &HttpRequest| {
                let app_error = match &err {
                    JsonPayloadError::ContentType => AppError::bad_request(
                        ErrorCode::BadRequest,
                        "expected Content-Type: application/json",
                    ),
                    JsonPayloadError::OverflowKnownLength { .. }
                    | JsonPayloadError::Overflow { .. } => {
                        AppError::BodyTooLarge("the JSON body is over 64 KiB".into())
                    }
                    JsonPayloadError::Deserialize(e) if e.is_data() => AppError::bad_request(
                        ErrorCode::BadRequest,
                        format!("invalid request body: {e}"),
                    ),
                    _ => {
                        AppError::bad_request(ErrorCode::InvalidJson, "the body is not valid JSON")
                    }
                };
                app_error.into()
            })
    }

    pub fn query_config() -> web::QueryConfig {
        web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req: &HttpRequest| {
            AppError::bad_request(
                ErrorCode::BadRequest,
                format!("invalid query string: {err}"),
            )
            .into()
        })
    }

    pub fn path_config() -> web::PathConfig {
        web::PathConfig::default().error_handler(|err: PathError, _req: &HttpRequest| {
            let message = match &err {
                PathError::Deserialize(e) => plain_words(&e.to_string()),
                other => plain_words(&other.to_string()),
            };
            AppError::bad_request(ErrorCode::BadRequest, format!("invalid path: {message}")).into()
        })
    }

    /// serde's messages name Rust types ("can not parse \"x\" to a i32"); clients are told
    /// what was expected in plain words instead.
    pub(crate) fn plain_words(message: &str) -> String {
        const TYPES: &[(&str, &str)] = &[
            ("a i32", "a whole number"),
            ("a i64", "a whole number"),
            ("a u32", "a whole number"),
            ("a u64", "a whole number"),
            ("a usize", "a whole number"),
            ("i32", "a whole number"),
            ("i64", "a whole number"),
            ("u32", "a whole number"),
            ("u64", "a whole number"),
            ("usize", "a whole number"),
            ("a bool", "true or false"),
            ("a boolean", "true or false"),
            ("a string", "text"),
        ];
        // actix's path errors: `can not parse "abc" to a i32`.
        let mut plain = match message
            .strip_prefix("can not parse ")
            .and_then(|rest| rest.rsplit_once(" to "))
        {
            Some((value, target)) => format!("{value} is not {target}"),
            None => message.to_owned(),
        };
        for (rust, words) in TYPES {
            plain = replace_word(&plain, rust, words);
        }
        plain
    }

    /// Replaces `from` where it stands as whole words.
    fn replace_word(text: &str, from: &str, to: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(from) {
            let before = rest[..i].chars().next_back();
            let after = rest[i + from.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric() && c != '_');
            out.push_str(&rest[..i]);
            out.push_str(if boundary(before) && boundary(after) {
                to
            } else {
                from
            });
            rest = &rest[i + from.len()..];
        }
        out.push_str(rest);
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn rust_type_names_become_plain_words() {
            assert_eq!(
                super::plain_words("can not parse \"abc\" to a i32"),
                "\"abc\" is not a whole number"
            );
            assert_eq!(
                super::plain_words("invalid type: string \"x\", expected i64"),
                "invalid type: string \"x\", expected a whole number"
            );
            assert_eq!(super::plain_words("expected usizes_x"), "expected usizes_x");
        }
    }
}
