use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::openapi::ErrorBody;
use super::{base_url, endpoint};
use crate::auth::AuthUser;
use crate::db;
use crate::db::models::{FileView, Message};
use crate::db::search::{MAX_QUERY_CHARS, MIN_TERM_CHARS, SearchRequest};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(paths(search))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/search", vec![(Method::GET, web::to(search))]));
}

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// 1 to 256 characters, with at least one word of 3 or more letters or digits.
    q: Option<String>,
    /// Only this channel.
    channel_id: Option<i32>,
    /// At most this many hits, messages and files together (default 20, at most 100).
    limit: Option<i64>,
    /// Only hits older than this message id (a file counts as its message's): the
    /// previous page's `next_before`.
    before: Option<i32>,
}

/// Newest first.
#[derive(Serialize, ToSchema)]
struct SearchResults {
    messages: Vec<Message>,
    files: Vec<FileView>,
    /// More hits remain, older than this page.
    has_more: bool,
    /// With `has_more`: the `before` of the next page.
    next_before: Option<i32>,
}

/// Messages whose words match `q` and files whose names match it, newest first, in the
/// channels the caller is a member of now. Case-insensitive; every word of the query must
/// match, as a word or the start of one (`repo` finds `report`), or anywhere in text
/// written without spaces (a run of 3+ characters of Chinese or Japanese).
#[utoipa::path(get, path = "/api/search", tag = "search", security(("bearer" = [])),
    params(SearchQuery),
    responses(
        (status = 200, description = "a page of hits", body = SearchResults),
        (status = 400, description = "`bad_request`: no query, one over 256 characters or without a word of 3+ characters, or a bad paging parameter", body = ErrorBody),
    ))]
async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, AppError> {
    let SearchQuery {
        q,
        channel_id,
        limit,
        before,
    } = query.into_inner();
    let q = q.unwrap_or_default();
    if q.trim().is_empty() || q.chars().count() > MAX_QUERY_CHARS {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            format!("q is 1 to {MAX_QUERY_CHARS} characters"),
        ));
    }
    let terms = db::search::terms(&q);
    if terms.is_empty() {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            format!("q needs a word of at least {MIN_TERM_CHARS} letters or digits"),
        ));
    }
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit < 1 {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "limit must be at least 1",
        ));
    }
    let request = SearchRequest {
        user_id: auth.id,
        terms,
        channel_id,
        before,
        limit: limit.min(MAX_LIMIT),
    };
    let page = state
        .db
        .run(move |conn| Ok(db::search::search(conn, &request)?))
        .await?;
    let base = base_url(&req);
    let messages = page
        .messages
        .into_iter()
        .map(|parts| state.links.message_view(&base, auth.id, parts))
        .collect();
    let files = page
        .files
        .iter()
        .map(|file| state.links.file_view(&base, auth.id, file))
        .collect();
    Ok(HttpResponse::Ok().json(SearchResults {
        messages,
        files,
        has_more: page.has_more,
        next_before: page.next_before,
    }))
}
