//! `/api/ws` itself is served by `realtime::upgrade`, which actix-http hands every upgrade
//! request to. A request that reaches the routes did not ask for an upgrade.

use actix_web::{HttpResponse, get, web};

use crate::error::{AppError, ErrorCode};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(not_upgraded);
}

#[get("/ws")]
async fn not_upgraded() -> Result<HttpResponse, AppError> {
    Err(AppError::bad_request(
        ErrorCode::BadRequest,
        "this is a WebSocket endpoint: send `Upgrade: websocket`",
    ))
}
