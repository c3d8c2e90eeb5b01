//! Accounts: password hashing, JWTs, and the extractor that authenticates requests.

pub mod passwords;
pub mod tokens;

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
pub use tokens::TokenService;

/// The authenticated caller, from `Authorization: Bearer <jwt>`.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: i32,
    /// Expiry of the presented token (Unix seconds), so sockets can close when it passes.
    pub expires_at: i64,
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, AppError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("AppState is not registered")))?;
    let token = bearer_token(req).ok_or_else(|| {
        AppError::unauthorized(
            ErrorCode::Unauthorized,
            "missing Authorization: Bearer token",
        )
    })?;
    state.tokens.verify(token)
}

/// The token of an `Authorization: Bearer` header (the scheme is case-insensitive).
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    bearer_token_of(req.headers())
}

/// The token of an `Authorization: Bearer` header among `headers`.
pub fn bearer_token_of(headers: &header::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
