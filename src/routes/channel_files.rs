//! `GET /api/channels/{id}/files`: a channel's files, newest first (the client's "Files"
//! panel).

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::openapi::ErrorBody;
use super::{base_url, endpoint};
use crate::auth::AuthUser;
use crate::db;
use crate::db::models::FileView;
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(paths(list))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/channels/{id}/files",
        vec![(Method::GET, web::to(list))],
    ));
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 100;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FilesQuery {
    /// Only files with an id below this one: the previous page's `next_before`.
    before: Option<i32>,
    /// At most this many files (default 50, at most 100).
    limit: Option<i64>,
}

/// Newest first.
#[derive(Serialize, ToSchema)]
struct ChannelFiles {
    files: Vec<FileView>,
    /// Older files remain.
    has_more: bool,
    /// With `has_more`: the `before` of the next page (the last file's id).
    next_before: Option<i32>,
}

/// The channel's live files (thread replies' included), newest first, with keyset paging.
/// Deleted files are never listed.
#[utoipa::path(get, path = "/api/channels/{id}/files", tag = "files", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id"), FilesQuery),
    responses(
        (status = 200, description = "a page of files", body = ChannelFiles),
        (status = 400, description = "`bad_request`: a bad paging parameter", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel, or not a member", body = ErrorBody),
    ))]
async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    query: web::Query<FilesQuery>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    let FilesQuery { before, limit } = query.into_inner();
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit < 1 {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "limit must be at least 1",
        ));
    }
    let limit = limit.min(MAX_LIMIT);
    let (files, has_more) = state
        .db
        .run(move |conn| {
            db::channels::find_for_member(conn, channel_id, auth.id)?;
            Ok(db::channel_files::page(conn, channel_id, before, limit)?)
        })
        .await?;
    let base = base_url(&req);
    let next_before = if has_more {
        files.last().map(|f| f.id)
    } else {
        None
    };
    let files = files
        .iter()
        .map(|file| state.links.file_view(&base, auth.id, file))
        .collect();
    Ok(HttpResponse::Ok().json(ChannelFiles {
        files,
        has_more,
        next_before,
    }))
}
