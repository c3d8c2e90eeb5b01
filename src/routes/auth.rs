use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::endpoint;
use super::openapi::ErrorBody;
use crate::auth::{AuthUser, passwords};
use crate::chat::{is_invisible_name, is_unsafe_display_char, normalize_name};
use crate::client_addr::ClientAddr;
use crate::db::models::User;
use crate::db::{self};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(paths(register, login, me, update_me, my_storage))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/auth/register",
        vec![(Method::POST, web::to(register))],
    ))
    .service(endpoint(
        "/auth/login",
        vec![(Method::POST, web::to(login))],
    ))
    .service(endpoint(
        "/me",
        vec![
            (Method::GET, web::to(me)),
            (Method::PATCH, web::to(update_me)),
        ],
    ))
    .service(endpoint(
        "/me/storage",
        vec![(Method::GET, web::to(my_storage))],
    ));
}

#[derive(Deserialize, ToSchema)]
struct RegisterBody {
    username: String,
    password: String,
    display_name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
struct LoginBody {
    username: String,
    password: String,
}

/// A signed-in session: the token to send as `Authorization: Bearer`.
#[derive(Serialize, ToSchema)]
struct Session {
    token: String,
    /// RFC 3339, UTC.
    expires_at: Option<String>,
    user: User,
}

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/api/auth/register", tag = "users",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "registered and signed in", body = Session),
        (status = 400, description = "`invalid_username`, `weak_password`, `invalid_display_name`, `bad_request`", body = ErrorBody),
        (status = 409, description = "`username_taken`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: registrations from this address", body = ErrorBody),
    ))]
async fn register(
    state: web::Data<AppState>,
    from: ClientAddr,
    body: web::Json<RegisterBody>,
) -> Result<HttpResponse, AppError> {
    let RegisterBody {
        username,
        password,
        display_name,
    } = body.into_inner();
    validate_username(&username)?;
    validate_password(&password)?;
    let display_name = clean_display_name(display_name.as_deref().unwrap_or(&username))?;
    // Counted once the body is valid: a typo in a form costs nobody a registration.
    state.auth_limits.registration_per_address.admit(from)?;

    let hash = state.passwords.hash(password).await?;
    let user = state
        .db
        .write(move |conn| {
            db::users::insert(conn, &username, &display_name, &hash).map_err(|e| {
                match AppError::from(e) {
                    AppError::Conflict { .. } => {
                        AppError::conflict(ErrorCode::UsernameTaken, "that username is taken")
                    }
                    other => other,
                }
            })
        })
        .await?;
    tracing::info!(user_id = user.id, "user registered");
    Ok(HttpResponse::Created().json(session(&state, user)?))
}

/// Signs in.
#[utoipa::path(post, path = "/api/auth/login", tag = "users",
    request_body = LoginBody,
    responses(
        (status = 200, description = "signed in", body = Session),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: failed attempts for this username from this address, or from this address", body = ErrorBody),
    ))]
async fn login(
    state: web::Data<AppState>,
    from: ClientAddr,
    body: web::Json<LoginBody>,
) -> Result<HttpResponse, AppError> {
    let LoginBody { username, password } = body.into_inner();
    let invalid =
        || AppError::unauthorized(ErrorCode::InvalidCredentials, "wrong username or password");
    if password.len() > passwords::MAX_PASSWORD_BYTES {
        return Err(invalid());
    }
    let attempt = state.auth_limits.admit_login(&username, from)?;
    let found = state
        .db
        .run(move |conn| Ok(db::users::find_credentials(conn, &username)?))
        .await?;
    let (user, hash) = found.unzip();
    let matches = state.passwords.verify(password, hash).await?;
    let user = user.filter(|_| matches).ok_or_else(invalid)?;
    attempt.succeeded();
    Ok(HttpResponse::Ok().json(session(&state, user)?))
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller", body = User),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
    ))]
async fn me(state: web::Data<AppState>, auth: AuthUser) -> Result<web::Json<User>, AppError> {
    let user = state
        .db
        .run(move |conn| Ok(db::users::find(conn, auth.id)?))
        .await?;
    Ok(web::Json(user))
}

/// What the caller's files take, against `USER_QUOTA_MB`.
#[derive(Serialize, ToSchema)]
struct StorageUsage {
    /// Bytes of the caller's live (not deleted) files.
    used_bytes: i64,
    /// Null: unlimited.
    quota_bytes: Option<u64>,
    file_count: i64,
}

/// The caller's storage: used bytes, quota, live files.
#[utoipa::path(get, path = "/api/me/storage", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's storage", body = StorageUsage),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
    ))]
async fn my_storage(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<StorageUsage>, AppError> {
    let (used_bytes, file_count) = state
        .db
        .run(move |conn| Ok(db::quota::usage(conn, auth.id)?))
        .await?;
    Ok(web::Json(StorageUsage {
        used_bytes,
        quota_bytes: state.settings.limits.user_quota_bytes,
        file_count,
    }))
}

#[derive(Deserialize, ToSchema)]
struct UpdateMeBody {
    display_name: String,
}

/// Changes the caller's display name: 1 to 64 characters, stored in NFC, without control or
/// bidirectional-override characters and not only invisible ones. Messages show the new
/// name from then on (they carry the author's current name).
#[utoipa::path(patch, path = "/api/me", tag = "users", security(("bearer" = [])),
    request_body = UpdateMeBody,
    responses(
        (status = 200, description = "the caller, changed", body = User),
        (status = 400, description = "`invalid_display_name`, `bad_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
    ))]
async fn update_me(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<UpdateMeBody>,
) -> Result<web::Json<User>, AppError> {
    let display_name = clean_display_name(&body.into_inner().display_name)?;
    let user = crate::chat::set_display_name(&state, auth.id, display_name).await?;
    Ok(web::Json(user))
}

fn session(state: &AppState, user: User) -> Result<Session, AppError> {
    let issued = state.tokens.issue(user.id)?;
    let expires_at = chrono::DateTime::from_timestamp(issued.expires_at, 0)
        .map(|t| crate::db::models::rfc3339::format(&t.naive_utc()));
    Ok(Session {
        token: issued.token,
        expires_at,
        user,
    })
}

fn validate_username(username: &str) -> Result<(), AppError> {
    let valid_chars = username
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if !(3..=32).contains(&username.len()) || !valid_chars {
        return Err(AppError::bad_request(
            ErrorCode::InvalidUsername,
            "a username is 3 to 32 characters of a-z, 0-9, '_', '.' and '-'",
        ));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), AppError> {
    let chars = password.chars().count();
    if chars < passwords::MIN_PASSWORD_CHARS {
        return Err(AppError::bad_request(
            ErrorCode::WeakPassword,
            format!(
                "a password has at least {} characters",
                passwords::MIN_PASSWORD_CHARS
            ),
        ));
    }
    if password.len() > passwords::MAX_PASSWORD_BYTES {
        return Err(AppError::bad_request(
            ErrorCode::WeakPassword,
            format!(
                "a password has at most {} bytes",
                passwords::MAX_PASSWORD_BYTES
            ),
        ));
    }
    Ok(())
}

fn clean_display_name(raw: &str) -> Result<String, AppError> {
    let name = normalize_name(raw.trim());
    if is_invisible_name(&name)
        || name.chars().count() > 64
        || name.chars().any(is_unsafe_display_char)
    {
        return Err(AppError::bad_request(
            ErrorCode::InvalidDisplayName,
            "a display name is 1 to 64 printable characters",
        ));
    }
    Ok(name)
}
