//! `/api/ws` itself is served by `realtime::upgrade`, which actix-http hands every upgrade
//! request to. A request that reaches the routes did not ask for an upgrade.

use actix_web::http::Method;
use actix_web::{HttpResponse, web};

use super::endpoint;
use crate::error::{AppError, ErrorCode};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/ws", vec![(Method::GET, web::to(not_upgraded))]));
}

async fn not_upgraded() -> Result<HttpResponse, AppError> {
    Err(AppError::bad_request(
        ErrorCode::BadRequest,
        "this is a WebSocket endpoint: send `Upgrade: websocket`",
    ))
}
