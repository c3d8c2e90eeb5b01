use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::endpoint;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/healthz", vec![(Method::GET, web::to(healthz))]))
        .service(endpoint("/readyz", vec![(Method::GET, web::to(readyz))]));
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ok` or `unavailable`
    status: &'static str,
    database: DatabaseCheck,
    store: StoreCheck,
}

#[derive(Serialize, ToSchema)]
struct DatabaseCheck {
    /// `sqlite` or `postgres`
    backend: &'static str,
    ok: bool,
}

#[derive(Serialize, ToSchema)]
struct StoreCheck {
    /// `s3` or `local`
    kind: &'static str,
    ok: bool,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "up", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The process can serve: the database and the file store answer.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "the database and the store answer", body = Readiness),
    (status = 503, description = "one of them does not", body = Readiness),
))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (database, store) = tokio::join!(state.db.ping(), state.store.check());
    for (what, result) in [("database", &database), ("store", &store)] {
        if let Err(e) = result {
            tracing::warn!(check = what, error = ?e, "readiness check failed");
        }
    }
    let ready = database.is_ok() && store.is_ok();
    let body = Readiness {
        status: if ready { "ok" } else { "unavailable" },
        database: DatabaseCheck {
            backend: state.db.backend(),
            ok: database.is_ok(),
        },
        store: StoreCheck {
            kind: state.store.kind(),
            ok: store.is_ok(),
        },
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
