use actix_web::http::Method;
use actix_web::web;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::endpoint;
use crate::chat::{MAX_CONTENT_CHARS, MAX_REACTIONS_PER_MESSAGE};
use crate::state::AppState;
use crate::uploads::MAX_FILE_PARTS;

#[derive(OpenApi)]
#[openapi(paths(show))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/config", vec![(Method::GET, web::to(show))]));
}

/// The limits a client should know before it sends anything.
#[derive(Serialize, ToSchema)]
struct PublicConfig {
    /// The largest file accepted (`MAX_FILE_SIZE_MB`).
    max_file_size_bytes: u64,
    /// `ALLOWED_FILE_TYPES`: exact types and `family/*` patterns.
    allowed_file_types: Vec<String>,
    /// Files in one upload request at most.
    max_files_per_message: usize,
    /// A user's storage quota; null: none.
    user_quota_bytes: Option<u64>,
    /// Whether clients may upload straight to the store (`POST /api/uploads`): always, on
    /// both stores (the local store takes the parts itself).
    direct_uploads: bool,
    /// Characters in a message at most.
    max_message_chars: usize,
    /// Different emoji on one message at most.
    max_reactions_per_message: usize,
    /// `FILE_RETENTION_DAYS`: files older than this are deleted; null: kept. A channel's
    /// own `retention_days` may be shorter.
    file_retention_days: Option<u32>,
}

/// Public settings: no token needed.
#[utoipa::path(get, path = "/api/config", tag = "meta",
    responses((status = 200, description = "the public limits", body = PublicConfig)))]
async fn show(state: web::Data<AppState>) -> web::Json<PublicConfig> {
    web::Json(PublicConfig {
        max_file_size_bytes: state.upload_rules.max_file_bytes,
        allowed_file_types: state.upload_rules.allowed_types.clone(),
        max_files_per_message: MAX_FILE_PARTS,
        user_quota_bytes: state.settings.limits.user_quota_bytes,
        direct_uploads: true,
        max_message_chars: MAX_CONTENT_CHARS,
        max_reactions_per_message: MAX_REACTIONS_PER_MESSAGE,
        file_retention_days: state.settings.store.file_retention_days,
    })
}
