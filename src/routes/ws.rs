//! `/api/ws` itself is served by `realtime::upgrade`, which actix-http hands every upgrade
//! request to. A request that reaches the routes did not ask for an upgrade.

use actix_web::http::Method;
use actix_web::{HttpResponse, web};

use utoipa::OpenApi;

use super::endpoint;
use crate::error::{AppError, ErrorCode};

#[derive(OpenApi)]
#[openapi(paths(not_upgraded))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/ws", vec![(Method::GET, web::to(not_upgraded))]));
}

/// The WebSocket: with `Upgrade: websocket` it switches protocols (frames and events:
/// docs/api.md); without, `400`.
#[utoipa::path(get, path = "/api/ws", tag = "realtime", responses(
    (status = 101, description = "switched to the WebSocket protocol"),
    (status = 400, description = "`bad_request`: not an upgrade request", body = super::openapi::ErrorBody),
))]
async fn not_upgraded() -> Result<HttpResponse, AppError> {
    Err(AppError::bad_request(
        ErrorCode::BadRequest,
        "this is a WebSocket endpoint: send `Upgrade: websocket`",
    ))
}
