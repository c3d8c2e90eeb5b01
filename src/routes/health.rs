use actix_web::{HttpResponse, get, web};
use serde_json::json;

use crate::state::AppState;

/// The process is up.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The process can serve: the database answers.
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.db.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "database": { "backend": state.db.backend(), "ok": true },
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "database": { "backend": state.db.backend(), "ok": false },
            }))
        }
    }
}
