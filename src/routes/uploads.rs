//! Direct uploads (`crate::direct`): the browser sends the bytes straight to the store.

use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::openapi::ErrorBody;
use super::{base_url, endpoint};
use crate::auth::AuthUser;
use crate::direct::{self, CreateUpload, PartUrl, SentPart, UploadView};
use crate::error::AppError;
use crate::idempotency::{self, Fingerprint};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(paths(create, show, abort, part_urls, complete, put_part))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/uploads", vec![(Method::POST, web::to(create))]))
        .service(endpoint(
            "/uploads/{id}",
            vec![
                (Method::GET, web::to(show)),
                (Method::DELETE, web::to(abort)),
            ],
        ))
        .service(endpoint(
            "/uploads/{id}/parts",
            vec![(Method::POST, web::to(part_urls))],
        ))
        .service(endpoint(
            "/uploads/{id}/complete",
            vec![(Method::POST, web::to(complete))],
        ))
        .service(endpoint(
            "/uploads/{id}/parts/{part_number}",
            vec![(Method::PUT, web::to(put_part))],
        ));
}

#[derive(Deserialize, ToSchema)]
struct PartsRequest {
    /// 1 to 100 part numbers, each within `1..part_count`.
    part_numbers: Vec<i32>,
}

#[derive(Serialize, ToSchema)]
struct PartsBody {
    parts: Vec<PartUrl>,
}

#[derive(Deserialize, ToSchema)]
struct CompleteRequest {
    /// Every part, with the `ETag` its `PUT` answered.
    parts: Vec<SentPart>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PartToken {
    /// The signed, expiring token of the part URL.
    token: String,
}

/// Starts a direct upload. The declared size counts against the quota at once. With an
/// `Idempotency-Key`, a retry replays the first answer instead of opening a second upload.
#[utoipa::path(post, path = "/api/uploads", tag = "uploads", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry safely: docs/api.md")),
    request_body = CreateUpload,
    responses(
        (status = 201, description = "the upload, `pending`", body = UploadView),
        (status = 400, description = "`bad_request` (size < 1, missing fields), `invalid_file_name`", body = ErrorBody),
        (status = 404, description = "`not_found`: the channel is not visible", body = ErrorBody),
        (status = 413, description = "`file_too_large`, `quota_exceeded`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: `MAX_PENDING_UPLOADS` open already", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`", body = ErrorBody),
    ))]
async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateUpload>,
) -> Result<HttpResponse, AppError> {
    let key = idempotency::key_of(&req)?;
    let body = body.into_inner();
    let fingerprint = Fingerprint::new("POST", req.path())
        .part(body.channel_id.to_string().as_bytes())
        .part(body.file_name.as_bytes())
        .part(body.file_size.to_string().as_bytes())
        .part(body.content_type.as_deref().unwrap_or_default().as_bytes());
    idempotency::run(&state.db, auth.id, key, fingerprint, |completion| async {
        let upload = direct::create(&state, auth.id, body, completion).await?;
        Ok(HttpResponse::Created().json(upload))
    })
    .await
}

/// The upload, with `parts_done` as the store reports them (to resume).
#[utoipa::path(get, path = "/api/uploads/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "upload id")),
    responses(
        (status = 200, description = "the upload", body = UploadView),
        (status = 404, description = "`not_found`: no such upload of the caller's", body = ErrorBody),
    ))]
async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(direct::show(&state, auth.id, &path).await?))
}

/// Cancels an upload: its stored parts (or object) are deleted, its quota given back.
#[utoipa::path(delete, path = "/api/uploads/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "upload id")),
    responses(
        (status = 204, description = "aborted (or ended already)"),
        (status = 404, description = "`not_found`: no such upload of the caller's", body = ErrorBody),
    ))]
async fn abort(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    direct::abort(&state, auth.id, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// One presigned `PUT` URL per part (at most 100 per call, valid up to 15 minutes; ask
/// again to resume).
#[utoipa::path(post, path = "/api/uploads/{id}/parts", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "upload id")),
    request_body = PartsRequest,
    responses(
        (status = 200, description = "the URLs", body = PartsBody),
        (status = 400, description = "`bad_request`: a part number outside `1..part_count`, or none, or over 100", body = ErrorBody),
        (status = 404, description = "`not_found`: no such upload of the caller's", body = ErrorBody),
        (status = 409, description = "`conflict`: the upload takes no more parts", body = ErrorBody),
    ))]
async fn part_urls(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<String>,
    body: web::Json<PartsRequest>,
) -> Result<HttpResponse, AppError> {
    let base = base_url(&req);
    let parts = direct::part_urls(
        &state,
        &base,
        auth.id,
        &path,
        body.into_inner().part_numbers,
    )
    .await?;
    Ok(HttpResponse::Ok().json(PartsBody { parts }))
}

/// Checks the stored object (every part's length, the total, the type sniffed from its
/// first bytes) and makes the upload `ready`. Idempotent: a ready upload answers the same.
#[utoipa::path(post, path = "/api/uploads/{id}/complete", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "upload id")),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "`ready`, with its `file`", body = UploadView),
        (status = 404, description = "`not_found`: no such upload of the caller's", body = ErrorBody),
        (status = 409, description = "`upload_incomplete`: parts missing (or not with the stored ETags); `conflict`: expired or cancelled", body = ErrorBody),
        (status = 415, description = "`unsupported_file_type`: the object is deleted, the upload `failed`", body = ErrorBody),
        (status = 422, description = "`size_mismatch`: the object is deleted, the upload `failed`", body = ErrorBody),
    ))]
async fn complete(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<String>,
    body: web::Json<CompleteRequest>,
) -> Result<HttpResponse, AppError> {
    let upload = direct::complete(&state, auth.id, &path, body.into_inner().parts).await?;
    Ok(HttpResponse::Ok().json(upload))
}

/// The local store's part URL (what `parts` hands out when files are kept on the server's
/// disk): the body is the part's bytes. No bearer token: the URL's signed token is the
/// credential, as an S3 presigned URL's signature is.
#[utoipa::path(put, path = "/api/uploads/{id}/parts/{part_number}", tag = "uploads",
    params(
        ("id" = String, Path, description = "upload id"),
        ("part_number" = i32, Path, description = "1..part_count"),
        PartToken,
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "stored; the `ETag` header names this copy of the part"),
        (status = 403, description = "`invalid_link`: a forged or expired token", body = ErrorBody),
        (status = 409, description = "`conflict`: the upload takes no more parts", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: longer than the part (`complete` will answer `size_mismatch`)", body = ErrorBody),
    ))]
async fn put_part(
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
    query: web::Query<PartToken>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let (id, part_number) = path.into_inner();
    let mut body = payload.map(|chunk| {
        chunk.map_err(|e| {
            AppError::bad_request(
                crate::error::ErrorCode::BadRequest,
                format!("the part was interrupted: {e}"),
            )
        })
    });
    let etag = direct::put_local_part(&state, &id, part_number, &query.token, &mut body).await?;
    Ok(HttpResponse::build(StatusCode::OK)
        .insert_header((header::ETAG, format!("\"{etag}\"")))
        .finish())
}
