use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, guard, web};
use serde::Deserialize;

use super::{base_url, endpoint};
use crate::auth::AuthUser;
use crate::chat::{MAX_CONTENT_CHARS, post_message, validate_content};
use crate::db::{self, messages::PageRequest};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::uploads::{self, UploadForm};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/channels/{id}/messages",
        vec![
            (
                Method::POST,
                web::to(create_with_files).guard(guard::fn_guard(is_multipart)),
            ),
            (Method::POST, web::to(create_json)),
            (Method::GET, web::to(list)),
        ],
    ));
}

/// The `content` part of a multipart message, in bytes (characters of up to 4 bytes).
const MAX_CONTENT_BYTES: usize = MAX_CONTENT_CHARS * 4;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

#[derive(Deserialize)]
struct CreateBody {
    content: String,
}

#[derive(Deserialize)]
struct ListQuery {
    before: Option<i32>,
    after: Option<i32>,
    limit: Option<i64>,
}

fn is_multipart(ctx: &guard::GuardContext<'_>) -> bool {
    ctx.head()
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/"))
}

async fn create_json(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, AppError> {
    let content = body.into_inner().content;
    validate_content(&content, false)?;
    let message = post_message(
        &state,
        auth.id,
        path.into_inner(),
        content,
        Vec::new(),
        None,
    )
    .await?;
    let view = state.links.message_view(&base_url(&req), auth.id, message);
    Ok(HttpResponse::Created().json(view))
}

/// `multipart/form-data`: a `content` part, then up to 10 `file` parts. All or nothing.
async fn create_with_files(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let metrics = state.metrics.clone();
    let created = post_with_files(req, state, auth, path, payload);
    uploads::counting_refusals(&metrics, created).await
}

async fn post_with_files(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    // Refuse before reading any file; the insert checks membership again.
    state
        .db
        .run(move |conn| Ok(db::channels::find_for_member(conn, channel_id, auth.id)?))
        .await?;
    let slot = state.upload_slots.take(auth.id)?;
    let mut form = UploadForm::new(&req, payload, &state.upload_rules, slot)?;
    let content = match form.next_part().await? {
        Some(mut part) if uploads::part_name(&part) == "content" => {
            uploads::read_text_part(&mut part, MAX_CONTENT_BYTES).await?
        }
        _ => {
            return Err(AppError::bad_request(
                ErrorCode::BadRequest,
                "the first part must be the `content` text",
            ));
        }
    };
    validate_content(&content, true)?;
    let pending = uploads::receive_files(
        &mut form,
        &state.store,
        &state.metrics,
        &state.upload_rules,
        channel_id,
    )
    .await?;
    let message = pending
        .commit_with(|stored| async {
            validate_content(&content, !stored.is_empty())?;
            post_message(&state, auth.id, channel_id, content, stored, None).await
        })
        .await?;
    let view = state.links.message_view(&base_url(&req), auth.id, message);
    Ok(HttpResponse::Created().json(view))
}

async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit < 1 {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "limit must be at least 1",
        ));
    }
    let request = PageRequest {
        before: query.before,
        after: query.after,
        limit: limit.min(MAX_PAGE),
    };
    let page = state
        .db
        .run(move |conn| {
            db::channels::find_for_member(conn, channel_id, auth.id)?;
            Ok(db::messages::page(conn, channel_id, request)?)
        })
        .await?;
    let base = base_url(&req);
    let messages: Vec<_> = page
        .messages
        .into_iter()
        .map(|parts| state.links.message_view(&base, auth.id, parts))
        .collect();
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "messages": messages, "has_more": page.has_more })))
}
