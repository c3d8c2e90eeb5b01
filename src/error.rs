//! The one error type of the API and its mapping to HTTP, in one place.
//!
//! Handlers return `Result<_, AppError>`; the status and the JSON body
//! `{"error": {"code", "message"}}` are decided here. Internal causes are logged with
//! their chain and never sent to clients.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or breaks a validation rule (400).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// No, or an invalid, credential (401).
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// Authenticated but not allowed (403).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// Absent, or not visible to the caller (404). Never hints that something exists.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken (409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedFileType(String),
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
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        AppError::Unauthorized {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::Forbidden {
            code: "forbidden",
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        AppError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest { code, .. }
            | AppError::Unauthorized { code, .. }
            | AppError::Conflict { code, .. }
            | AppError::Forbidden { code, .. } => code,
            AppError::NotFound => "not_found",
            AppError::PayloadTooLarge(_) => "file_too_large",
            AppError::UnsupportedFileType(_) => "unsupported_file_type",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::StorageUnavailable(_) => "storage_unavailable",
            AppError::DatabaseUnavailable(_) => "database_unavailable",
            AppError::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedFileType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
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
                    code = self.code(),
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
        if let AppError::Unauthorized { .. } = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(json!({ "error": { "code": self.code(), "message": self.to_string() } }))
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::NotFound => AppError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                AppError::conflict("conflict", "already exists")
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
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
    use super::AppError;
    use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
    use actix_web::{HttpRequest, web};

    pub fn json_config() -> web::JsonConfig {
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|err, _req: &HttpRequest| {
                let app_error = match &err {
                    JsonPayloadError::ContentType => AppError::bad_request(
                        "bad_request",
                        "expected Content-Type: application/json",
                    ),
                    JsonPayloadError::OverflowKnownLength { .. }
                    | JsonPayloadError::Overflow { .. } => {
                        AppError::bad_request("payload_too_large", "the JSON body is too large")
                    }
                    JsonPayloadError::Deserialize(e) if e.is_data() => {
                        AppError::bad_request("bad_request", format!("invalid request body: {e}"))
                    }
                    _ => AppError::bad_request("invalid_json", "the body is not valid JSON"),
                };
                app_error.into()
            })
    }

    pub fn query_config() -> web::QueryConfig {
        web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req: &HttpRequest| {
            AppError::bad_request("bad_request", format!("invalid query string: {err}")).into()
        })
    }

    pub fn path_config() -> web::PathConfig {
        web::PathConfig::default().error_handler(|err: PathError, _req: &HttpRequest| {
            AppError::bad_request("bad_request", format!("invalid path: {err}")).into()
        })
    }
}
