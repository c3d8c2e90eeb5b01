use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, guard, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::openapi::ErrorBody;
use super::{base_url, endpoint};
use crate::auth::AuthUser;
use crate::chat::{self, Attachments, MAX_CONTENT_CHARS, post_message, validate_content};
use crate::db;
use crate::db::messages::PageRequest;
use crate::db::models::{Message, MessageParts};
use crate::error::{AppError, ErrorCode};
use crate::idempotency::{self, Answer, Completion, Fingerprint};
use crate::state::AppState;
use crate::uploads::{self, UploadForm};

#[derive(OpenApi)]
#[openapi(paths(create_json, list, edit, delete, thread, react, unreact))]
pub(super) struct Doc;

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
    ))
    .service(endpoint(
        "/channels/{id}/messages/{message_id}",
        vec![
            (Method::PATCH, web::to(edit)),
            (Method::DELETE, web::to(delete)),
        ],
    ))
    .service(endpoint(
        "/channels/{id}/messages/{message_id}/thread",
        vec![(Method::GET, web::to(thread))],
    ))
    // `[^/]*`: an empty emoji is a 400 like any other bad one, not a 404.
    .service(endpoint(
        "/channels/{id}/messages/{message_id}/reactions/{emoji:[^/]*}",
        vec![
            (Method::PUT, web::to(react)),
            (Method::DELETE, web::to(unreact)),
        ],
    ));
}

/// The `content` part of a multipart message, in bytes (characters of up to 4 bytes).
const MAX_CONTENT_BYTES: usize = MAX_CONTENT_CHARS * 4;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

#[derive(Deserialize, ToSchema)]
#[schema(as = CreateMessageBody)]
struct CreateBody {
    /// May be empty when `upload_ids` is not.
    content: String,
    /// Post as a reply in the thread of this top-level message of the channel.
    thread_id: Option<i32>,
    /// Direct uploads (`POST /api/uploads`) to attach, in this order: each the caller's,
    /// `ready`, for this channel and not attached before (else `400 invalid_upload`, and
    /// nothing is posted).
    #[serde(default)]
    upload_ids: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
struct EditBody {
    content: String,
}

/// `multipart/form-data`: a reply's `thread_id`, the text, then the files (documentation only: the parts are
/// read as a stream by `create_with_files`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct MessageForm {
    /// Optional, first when present: post as a reply in the thread of this top-level
    /// message of the channel.
    thread_id: Option<i32>,
    /// The message; may be empty when files come with it.
    content: String,
    /// Up to 10 files, each within `MAX_FILE_SIZE_MB`.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
}

/// A page of messages, newest last.
#[derive(Serialize, ToSchema)]
struct MessagePage {
    messages: Vec<Message>,
    /// More messages lie beyond this page in the direction asked (with `around`: older
    /// ones).
    has_more: bool,
    /// With `around` only: newer messages remain after this page.
    #[serde(skip_serializing_if = "Option::is_none")]
    has_newer: Option<bool>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Messages older than this id.
    before: Option<i32>,
    /// Messages newer than this id.
    after: Option<i32>,
    /// The page centred on this message (a reply: on its thread's root), to jump to a
    /// search result; not with `before` or `after`.
    around: Option<i32>,
    /// At most this many (default 50, at most 100).
    limit: Option<i64>,
}

fn is_multipart(ctx: &guard::GuardContext<'_>) -> bool {
    ctx.head()
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/"))
}

/// With an `Idempotency-Key`, the fingerprint is the method, the path (which names the
/// channel) and the content: a retry with the same text replays, another text is refused.
#[utoipa::path(post, path = "/api/channels/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = i32, Path, description = "channel id"),
        ("Idempotency-Key" = Option<String>, Header, description = "retry safely: docs/api.md"),
    ),
    request_body(content(
        (CreateBody = "application/json"),
        (MessageForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "posted (announced as `message_created`, then one `file_upload_complete` per file)", body = Message),
        (status = 400, description = "`invalid_content`, `too_many_files`, `invalid_file_name`, `invalid_upload` (an `upload_ids` entry that is not a ready, unattached upload of the caller's for this channel), `invalid_idempotency_key`, `bad_request` (also: `thread_id` is not a top-level message of this channel)", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_flight`", body = ErrorBody),
        (status = 413, description = "`file_too_large`, `payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_file_type`", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: uploads in flight", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`, `database_unavailable`", body = ErrorBody),
    ))]
async fn create_json(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, AppError> {
    let key = idempotency::key_of(&req)?;
    let channel_id = path.into_inner();
    let CreateBody {
        content,
        thread_id,
        upload_ids,
    } = body.into_inner();
    if upload_ids.len() > uploads::MAX_FILE_PARTS {
        return Err(AppError::bad_request(
            ErrorCode::TooManyFiles,
            format!("at most {} files per message", uploads::MAX_FILE_PARTS),
        ));
    }
    let mut fingerprint = Fingerprint::new("POST", req.path()).part(content.as_bytes());
    if let Some(thread_id) = thread_id {
        fingerprint = fingerprint.part(format!("thread {thread_id}").as_bytes());
    }
    for id in &upload_ids {
        fingerprint = fingerprint.part(format!("upload {id}").as_bytes());
    }
    let base = base_url(&req);
    idempotency::run(&state.db, auth.id, key, fingerprint, |completion| async {
        validate_content(&content, !upload_ids.is_empty())?;
        let answer = completion.map(|c| message_answer(&state, &base, auth.id, c));
        let attachments = Attachments {
            stored: Vec::new(),
            upload_ids,
        };
        let (message, body) = post_message(
            &state,
            auth.id,
            channel_id,
            content,
            thread_id,
            attachments,
            None,
            answer,
        )
        .await?;
        Ok(created(&state, &base, auth.id, message, body))
    })
    .await
}

/// The answer to a posted message, rendered (links issued) inside its transaction.
fn message_answer(
    state: &AppState,
    base: &str,
    user_id: i32,
    completion: Completion,
) -> Answer<MessageParts> {
    let (links, base) = (state.links.clone(), base.to_owned());
    Answer::new(
        completion,
        StatusCode::CREATED,
        move |parts: &MessageParts| json!(links.message_view(&base, user_id, parts.clone())),
    )
}

/// `201` with the body already rendered for the idempotency key, or rendered now.
fn created(
    state: &AppState,
    base: &str,
    user_id: i32,
    message: MessageParts,
    body: Option<serde_json::Value>,
) -> HttpResponse {
    match body {
        Some(body) => HttpResponse::Created().json(body),
        None => HttpResponse::Created().json(state.links.message_view(base, user_id, message)),
    }
}

/// `multipart/form-data`: a `content` part, then up to 10 `file` parts. All or nothing.
/// (Documented with `create_json`: one operation, two content types.)
///
/// With an `Idempotency-Key`, the fingerprint is the method, the path and the `content` part,
/// not the files: they stream into the store as they arrive, and hashing them before the key
/// is claimed would mean storing (or buffering) every duplicate's files, the very work the
/// key exists to spare. The key is claimed before any file is read.
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
    let key = idempotency::key_of(&req)?;
    let channel_id = path.into_inner();
    // Refuse before reading any file; the insert checks membership again.
    state
        .db
        .run(move |conn| Ok(db::channels::find_for_member(conn, channel_id, auth.id)?))
        .await?;
    let slot = state.upload_slots.take(auth.id)?;
    let mut form = UploadForm::new(&req, payload, &state.upload_rules, slot)?;
    // A reply in a thread names its root first: the `thread_id` part, before `content`
    // (files follow, and a part cannot be put back once read).
    let mut next = form.next_part().await?;
    let mut thread_id = None;
    if let Some(mut part) = next.take_if(|p| uploads::part_name(p) == "thread_id") {
        let text = uploads::read_text_part(&mut part, 16).await?;
        // The form yields its next part only once this one is gone.
        drop(part);
        let id = text.trim().parse::<i32>().map_err(|_| {
            AppError::bad_request(ErrorCode::BadRequest, "thread_id is a message id")
        })?;
        thread_id = Some(id);
        next = form.next_part().await?;
    }
    let content = match next {
        Some(mut part) if uploads::part_name(&part) == "content" => {
            uploads::read_text_part(&mut part, MAX_CONTENT_BYTES).await?
        }
        _ => {
            return Err(AppError::bad_request(
                ErrorCode::BadRequest,
                "the first part must be the `content` text (after `thread_id` for a reply)",
            ));
        }
    };
    let mut fingerprint = Fingerprint::new("POST", req.path())
        .part(b"multipart")
        .part(content.as_bytes());
    if let Some(thread_id) = thread_id {
        fingerprint = fingerprint.part(format!("thread {thread_id}").as_bytes());
    }
    let base = base_url(&req);
    idempotency::run(&state.db, auth.id, key, fingerprint, |completion| async {
        validate_content(&content, true)?;
        // The reservation lives until the rows are committed, at the end of this block.
        let (pending, _quota) =
            uploads::receive_files_within_quota(&state, &req, auth.id, &mut form, channel_id)
                .await?;
        let (message, body) = pending
            .commit_with(|stored| async {
                validate_content(&content, !stored.is_empty())?;
                let answer = completion.map(|c| message_answer(&state, &base, auth.id, c));
                post_message(
                    &state, auth.id, channel_id, content, thread_id, stored, None, answer,
                )
                .await
            })
            .await?;
        Ok(created(&state, &base, auth.id, message, body))
    })
    .await
}

/// Top-level messages only (replies are read with `/thread`). Keyset paging by id:
/// `before` for older pages, `after` to catch up.
#[utoipa::path(get, path = "/api/channels/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id"), ListQuery),
    responses(
        (status = 200, description = "a page", body = MessagePage),
        (status = 400, description = "`bad_request`: a bad paging parameter", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member, or `around` is no live message of the channel", body = ErrorBody),
    ))]
async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    let query = query.into_inner();
    let limit = page_limit(query.limit)?;
    let request = PageRequest {
        before: query.before,
        after: query.after,
        limit,
    };
    let around = query.around;
    if around.is_some() && (query.before.is_some() || query.after.is_some()) {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "around goes without before and after",
        ));
    }
    let (page, has_newer) = state
        .db
        .run(move |conn| {
            db::channels::find_for_member(conn, channel_id, auth.id)?;
            Ok(match around {
                Some(message_id) => {
                    let (page, newer) = db::messages::around(conn, channel_id, message_id, limit)?;
                    (page, Some(newer))
                }
                None => (db::messages::page(conn, channel_id, request)?, None),
            })
        })
        .await?;
    let base = base_url(&req);
    let messages: Vec<_> = page
        .messages
        .into_iter()
        .map(|parts| state.links.message_view(&base, auth.id, parts))
        .collect();
    Ok(HttpResponse::Ok().json(MessagePage {
        messages,
        has_more: page.has_more,
        has_newer,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ThreadQuery {
    /// Replies newer than this id.
    after: Option<i32>,
    /// At most this many (default 50, at most 100).
    limit: Option<i64>,
}

fn page_limit(limit: Option<i64>) -> Result<i64, AppError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit < 1 {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "limit must be at least 1",
        ));
    }
    Ok(limit.min(MAX_PAGE))
}

/// Replaces the content (the author only); announced as `message_updated`.
#[utoipa::path(patch, path = "/api/channels/{id}/messages/{message_id}", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = i32, Path, description = "channel id"),
        ("message_id" = i32, Path, description = "message id"),
    ),
    request_body = EditBody,
    responses(
        (status = 200, description = "edited, with `edited_at` set", body = Message),
        (status = 400, description = "`invalid_content`, `bad_request`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the author", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member, or no such message (deleted included)", body = ErrorBody),
    ))]
async fn edit(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<(i32, i32)>,
    body: web::Json<EditBody>,
) -> Result<HttpResponse, AppError> {
    let (channel_id, message_id) = path.into_inner();
    let content = body.into_inner().content;
    let parts = chat::edit_message(&state, auth.id, channel_id, message_id, content).await?;
    let base = base_url(&req);
    Ok(HttpResponse::Ok().json(state.links.message_view(&base, auth.id, parts)))
}

/// Deletes a message (the author only) with its files and, for a top-level message, its
/// thread; announced as `file_deleted` per file, then `message_deleted` per message.
#[utoipa::path(delete, path = "/api/channels/{id}/messages/{message_id}", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = i32, Path, description = "channel id"),
        ("message_id" = i32, Path, description = "message id"),
    ),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "`forbidden`: not the author", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member, or no such message (deleted included)", body = ErrorBody),
    ))]
async fn delete(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<(i32, i32)>,
) -> Result<HttpResponse, AppError> {
    let (channel_id, message_id) = path.into_inner();
    chat::delete_message(&state, auth.id, channel_id, message_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The replies to a top-level message, oldest first; keyset paging with `after`.
#[utoipa::path(get, path = "/api/channels/{id}/messages/{message_id}/thread", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = i32, Path, description = "channel id"),
        ("message_id" = i32, Path, description = "the top-level message"),
        ThreadQuery,
    ),
    responses(
        (status = 200, description = "a page of replies, ascending; `has_more`: newer ones remain", body = MessagePage),
        (status = 400, description = "`bad_request`: a bad paging parameter, or the message is a reply", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member, or no such message", body = ErrorBody),
    ))]
async fn thread(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<(i32, i32)>,
    query: web::Query<ThreadQuery>,
) -> Result<HttpResponse, AppError> {
    let (channel_id, message_id) = path.into_inner();
    let ThreadQuery { after, limit } = query.into_inner();
    let limit = page_limit(limit)?;
    let page = chat::thread(&state, auth.id, channel_id, message_id, after, limit).await?;
    let base = base_url(&req);
    let messages = page
        .messages
        .into_iter()
        .map(|parts| state.links.message_view(&base, auth.id, parts))
        .collect();
    Ok(HttpResponse::Ok().json(MessagePage {
        messages,
        has_more: page.has_more,
        has_newer: None,
    }))
}

/// `{emoji}` as sent, checked to be exactly one emoji.
fn emoji_of(raw: String) -> Result<String, AppError> {
    if !crate::emoji::is_emoji(&raw) {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "a reaction is exactly one emoji (URL-encoded)",
        ));
    }
    Ok(raw)
}

/// Adds the caller's reaction (idempotent); announced as `reaction_added` when new.
#[utoipa::path(put, path = "/api/channels/{id}/messages/{message_id}/reactions/{emoji}", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = i32, Path, description = "channel id"),
        ("message_id" = i32, Path, description = "message id"),
        ("emoji" = String, Path, description = "one emoji, URL-encoded"),
    ),
    responses(
        (status = 204, description = "the caller has reacted with this emoji"),
        (status = 400, description = "`bad_request`: not exactly one emoji; `too_many_reactions`: 20 different emoji already", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member, or no such message", body = ErrorBody),
    ))]
async fn react(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<(i32, i32, String)>,
) -> Result<HttpResponse, AppError> {
    let (channel_id, message_id, emoji) = path.into_inner();
    let emoji = emoji_of(emoji)?;
    chat::react(&state, auth.id, channel_id, message_id, emoji, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Removes the caller's reaction (idempotent); announced as `reaction_removed` when it was
/// there.
#[utoipa::path(delete, path = "/api/channels/{id}/messages/{message_id}/reactions/{emoji}", tag = "messages", security(("bearer" = [])),
    params(
        ("id" = i32, Path, description = "channel id"),
        ("message_id" = i32, Path, description = "message id"),
        ("emoji" = String, Path, description = "one emoji, URL-encoded"),
    ),
    responses(
        (status = 204, description = "the caller has no reaction with this emoji"),
        (status = 400, description = "`bad_request`: not exactly one emoji", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member, or no such message", body = ErrorBody),
    ))]
async fn unreact(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<(i32, i32, String)>,
) -> Result<HttpResponse, AppError> {
    let (channel_id, message_id, emoji) = path.into_inner();
    let emoji = emoji_of(emoji)?;
    chat::react(&state, auth.id, channel_id, message_id, emoji, false).await?;
    Ok(HttpResponse::NoContent().finish())
}
