use actix_files::NamedFile;
use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use super::openapi::ErrorBody;
use super::{base_url, endpoint};
use crate::auth::AuthUser;
use crate::chat;
use crate::db::models::FileView;
use crate::db::{self, models::FileUpload, models::rfc3339};
use crate::error::{AppError, ErrorCode};
use crate::idempotency::{self, Answer, Fingerprint};
use crate::links::DownloadLinks;
use crate::state::AppState;
use crate::storage::Presentation;
use crate::uploads::{self, UploadForm};

#[derive(OpenApi)]
#[openapi(paths(upload, show, remove, download_link, content, thumbnail))]
pub(super) struct Doc;

/// `multipart/form-data` (documentation only: read as a stream by `upload`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct AttachForm {
    /// First: the caller's message to attach to.
    message_id: i32,
    /// Then one or more files.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
}

/// Files attached by one upload.
#[derive(Serialize, ToSchema)]
struct FilesBody {
    files: Vec<FileView>,
}

/// A fresh download link.
#[derive(Serialize, ToSchema)]
struct DownloadLink {
    url: String,
    /// RFC 3339, UTC.
    expires_at: String,
    file: FileView,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/files/upload",
        vec![(Method::POST, web::to(upload))],
    ))
    .service(endpoint(
        "/files/{id}",
        vec![
            (Method::GET, web::to(show)),
            (Method::DELETE, web::to(remove)),
        ],
    ))
    .service(endpoint(
        "/files/download/{id}",
        vec![(Method::GET, web::to(download_link))],
    ))
    .service(endpoint(
        "/files/{id}/content",
        vec![(Method::GET, web::to(content))],
    ))
    .service(endpoint(
        "/files/{id}/thumbnail",
        vec![(Method::GET, web::to(thumbnail))],
    ));
}

/// A redirect to the store lives at most this long, so a link stops working within a
/// minute of the file's deletion or the user's leaving.
const STORE_URL_MAX_SECONDS: i64 = 60;
/// Served files can never run as a page in our origin.
const SANDBOX_CSP: &str =
    "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox";

/// `multipart/form-data`: a `message_id` part, then one or more `file` parts. Only the
/// message's author may attach.
///
/// With an `Idempotency-Key`, the fingerprint is the method, the path and the `message_id`,
/// not the files: they stream into the store, and hashing them before the key is claimed
/// would mean storing every duplicate's files, the work the key exists to spare. The key is
/// claimed before any file is read.
#[utoipa::path(post, path = "/api/files/upload", tag = "files", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry safely: docs/api.md")),
    request_body(content = AttachForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "attached (announced as one `file_upload_complete` per file)", body = FilesBody),
        (status = 400, description = "`too_many_files`, `invalid_file_name`, `bad_request`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the message's author", body = ErrorBody),
        (status = 404, description = "`not_found`: no such message, or not a member", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stalled", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_flight`", body = ErrorBody),
        (status = 413, description = "`file_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_file_type`", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: uploads in flight", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`, `database_unavailable`", body = ErrorBody),
    ))]
async fn upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let metrics = state.metrics.clone();
    uploads::counting_refusals(&metrics, attach(req, state, auth, payload)).await
}

async fn attach(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let key = idempotency::key_of(&req)?;
    let slot = state.upload_slots.take(auth.id)?;
    let mut form = UploadForm::new(&req, payload, &state.upload_rules, slot)?;
    let message_id = match form.next_part().await? {
        Some(mut part) if uploads::part_name(&part) == "message_id" => {
            uploads::read_text_part(&mut part, 32)
                .await?
                .trim()
                .parse::<i32>()
                .map_err(|_| {
                    AppError::bad_request(ErrorCode::BadRequest, "message_id must be a message id")
                })?
        }
        _ => {
            return Err(AppError::bad_request(
                ErrorCode::BadRequest,
                "the first part must be `message_id`",
            ));
        }
    };
    let fingerprint = Fingerprint::new("POST", req.path()).part(message_id.to_string().as_bytes());
    let base = base_url(&req);
    idempotency::run(&state.db, auth.id, key, fingerprint, |completion| async {
        let message = state
            .db
            .run(move |conn| {
                let message = db::messages::find(conn, message_id)?;
                db::channels::find_for_member(conn, message.channel_id, auth.id)?;
                Ok(message)
            })
            .await?;
        if message.user_id != auth.id {
            return Err(AppError::forbidden(
                "only the message's author may attach files to it",
            ));
        }
        let channel_id = message.channel_id;
        // The reservation lives until the rows are committed, at the end of this block.
        let (pending, _quota) =
            uploads::receive_files_within_quota(&state, &req, auth.id, &mut form, channel_id)
                .await?;
        let render = {
            let (links, base) = (state.links.clone(), base.clone());
            move |files: &Vec<FileUpload>| files_body(&links, &base, auth.id, files)
        };
        let answer = completion.map(|c| Answer::new(c, StatusCode::CREATED, render));
        let (files, body) = pending
            .commit_with(|stored| async {
                if stored.is_empty() {
                    return Err(AppError::bad_request(
                        ErrorCode::BadRequest,
                        "no `file` part",
                    ));
                }
                chat::attach_files(&state, auth.id, message_id, channel_id, stored, answer).await
            })
            .await?;
        let body = body.unwrap_or_else(|| files_body(&state.links, &base, auth.id, &files));
        Ok(HttpResponse::Created().json(body))
    })
    .await
}

/// `{"files": [file]}`, with links issued to `user_id`.
fn files_body(
    links: &DownloadLinks,
    base: &str,
    user_id: i32,
    files: &[FileUpload],
) -> serde_json::Value {
    let files = files
        .iter()
        .map(|f| links.file_view(base, user_id, f))
        .collect();
    json!(FilesBody { files })
}

/// A file's metadata, with a link issued to the caller.
#[utoipa::path(get, path = "/api/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = i32, Path, description = "file id")),
    responses(
        (status = 200, description = "the file", body = FileView),
        (status = 404, description = "`not_found`: no such file, deleted, or not a member", body = ErrorBody),
    ))]
async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<HttpResponse, AppError> {
    let file = chat::visible_file(&state, path.into_inner(), auth.id).await?;
    Ok(HttpResponse::Ok().json(state.links.file_view(&base_url(&req), auth.id, &file)))
}

/// A fresh link; counts as a download.
#[utoipa::path(get, path = "/api/files/download/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = i32, Path, description = "file id")),
    responses(
        (status = 200, description = "a link", body = DownloadLink),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
    ))]
async fn download_link(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<HttpResponse, AppError> {
    state.download_limiter.admit(auth.id)?;
    let file_id = path.into_inner();
    let file = state
        .db
        .write(move |conn| {
            let file = db::files::find_visible(conn, file_id, auth.id)?;
            db::files::record_download(conn, file_id)?;
            Ok(file)
        })
        .await?;
    let view = state.links.file_view(&base_url(&req), auth.id, &file);
    Ok(HttpResponse::Ok().json(DownloadLink {
        url: view.url.clone(),
        expires_at: rfc3339::format(&view.url_expires_at),
        file: view,
    }))
}

/// A link without its token is as invalid as one with a forged token: `403 invalid_link`,
/// not the query extractor's `400`.
#[derive(Deserialize)]
struct LinkQuery {
    #[serde(default)]
    token: String,
}

/// What a download link points at: the bytes (local store) or a redirect of at most a
/// minute to the store (S3). The link itself is the credential; no bearer token.
#[utoipa::path(get, path = "/api/files/{id}/content", tag = "files",
    params(
        ("id" = i32, Path, description = "file id"),
        ("token" = String, Query, description = "the link's signature, as issued"),
    ),
    responses(
        (status = 200, description = "the file's bytes (`Range` supported)"),
        (status = 302, description = "to the store, for at most 60 s"),
        (status = 403, description = "`invalid_link`: tampered or expired", body = ErrorBody),
        (status = 404, description = "`not_found`: deleted, or the user left", body = ErrorBody),
    ))]
async fn content(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<i32>,
    query: web::Query<LinkQuery>,
) -> Result<HttpResponse, AppError> {
    let (file, expires_at) = linked_file(&state, path.into_inner(), &query.token).await?;
    let object = file.s3_key.clone();
    serve(
        &req,
        &state,
        &file,
        &object,
        presentation(&file),
        expires_at,
    )
    .await
}

/// What a thumbnail link points at: under every rule of `content`'s links (it is issued
/// with the same token), the image's preview instead of its bytes.
#[utoipa::path(get, path = "/api/files/{id}/thumbnail", tag = "files",
    params(
        ("id" = i32, Path, description = "file id"),
        ("token" = String, Query, description = "the link's signature, as issued"),
    ),
    responses(
        (status = 200, description = "the thumbnail's bytes (JPEG or WebP)"),
        (status = 302, description = "to the store, for at most 60 s"),
        (status = 403, description = "`invalid_link`: tampered or expired", body = ErrorBody),
        (status = 404, description = "`not_found`: deleted, the user left, or no thumbnail", body = ErrorBody),
    ))]
async fn thumbnail(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<i32>,
    query: web::Query<LinkQuery>,
) -> Result<HttpResponse, AppError> {
    let (file, expires_at) = linked_file(&state, path.into_inner(), &query.token).await?;
    let object = file.thumbnail_key.clone().ok_or(AppError::NotFound)?;
    let presentation = crate::media::thumbnail_presentation(&file.file_name, &object);
    serve(&req, &state, &file, &object, presentation, expires_at).await
}

/// The file a link's token grants, re-checked now: `403 invalid_link` for a forged or
/// expired token, `404` when the file is gone or its user has left the channel. With the
/// link's expiry (a Unix time).
async fn linked_file(
    state: &AppState,
    file_id: i32,
    token: &str,
) -> Result<(FileUpload, i64), AppError> {
    let grant = state
        .links
        .verify(token)
        .filter(|grant| grant.file_id == file_id)
        .ok_or_else(|| AppError::Forbidden {
            code: ErrorCode::InvalidLink,
            message: "this link is invalid or has expired; ask for a fresh one".into(),
        })?;
    let file = chat::visible_file(state, file_id, grant.user_id).await?;
    Ok((file, grant.expires_at))
}

/// Serves `object` (a file's, or its thumbnail's): the bytes from the local store, or a
/// redirect of at most a minute to S3.
async fn serve(
    req: &HttpRequest,
    state: &AppState,
    file: &FileUpload,
    object: &str,
    presentation: Presentation,
    expires_at: i64,
) -> Result<HttpResponse, AppError> {
    let remaining = expires_at - chrono::Utc::now().timestamp();
    let lifetime = remaining.clamp(1, STORE_URL_MAX_SECONDS) as u64;
    if let Some(url) = state
        .store
        .presigned_get(object, &presentation, lifetime)
        .await?
    {
        return Ok(HttpResponse::Found()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .finish());
    }
    let path = state
        .store
        .local_path(object)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no local path for a local object")))?;
    let named = match NamedFile::open_async(&path).await {
        Ok(named) => named,
        // A row whose object is gone: nothing to serve, which is not the client's fault nor
        // a reason for a 500. Reported here and by the sweeper.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(
                file_id = file.id,
                "the object of a file row is missing from the store"
            );
            return Err(AppError::NotFound);
        }
        Err(e) => {
            return Err(AppError::StorageUnavailable(anyhow::anyhow!(
                "object of file {} unreadable: {e}",
                file.id
            )));
        }
    };
    let mut response = named
        .set_content_type(
            presentation
                .content_type
                .parse()
                .unwrap_or(mime_octet_stream()),
        )
        .into_response(req);
    let headers = response.headers_mut();
    // Replaces the one NamedFile derives from the path on disk.
    headers.insert(
        header::CONTENT_DISPOSITION,
        header::HeaderValue::from_str(&presentation.content_disposition)
            .map_err(|e| AppError::Internal(e.into()))?,
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(SANDBOX_CSP),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-store"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

/// Deletes a file (its uploader only); announced as `file_deleted`.
#[utoipa::path(delete, path = "/api/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = i32, Path, description = "file id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "`forbidden`: not the uploader", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn remove(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<HttpResponse, AppError> {
    chat::delete_file(&state, auth.id, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn mime_octet_stream() -> mime::Mime {
    mime::APPLICATION_OCTET_STREAM
}

fn content_type(file: &FileUpload) -> String {
    file.content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into())
}

fn presentation(file: &FileUpload) -> Presentation {
    Presentation::of(&file.file_name, &content_type(file))
}
