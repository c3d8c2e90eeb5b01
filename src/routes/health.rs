use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::endpoint;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/healthz", vec![(Method::GET, web::to(healthz))]))
        .service(endpoint("/readyz", vec![(Method::GET, web::to(readyz))]));
}

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The process can serve: the database and the file store answer.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (database, store) = tokio::join!(state.db.ping(), state.store.check());
    for (what, result) in [("database", &database), ("store", &store)] {
        if let Err(e) = result {
            tracing::warn!(check = what, error = ?e, "readiness check failed");
        }
    }
    let ready = database.is_ok() && store.is_ok();
    let body = json!({
        "status": if ready { "ok" } else { "unavailable" },
        "database": { "backend": state.db.backend(), "ok": database.is_ok() },
        "store": { "kind": state.store.kind(), "ok": store.is_ok() },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
