//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated from the
//! handlers' `#[utoipa::path]` annotations and the types they take and answer. Each route
//! module lists its own operations (`Doc`) beside the routes it registers; this module
//! merges them. `tests/api/openapi.rs` checks that every registered route is documented and
//! every documented one registered.

use std::sync::OnceLock;

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::endpoint;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/openapi.json",
        vec![(Method::GET, web::to(document))],
    ));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chatserver",
        description = "Real-time chat whose attachments live in S3. The WebSocket protocol \
                       (`GET /api/ws`) and the events are described in docs/api.md.",
    ),
    paths(document),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerToken),
)]
struct ApiDoc;

/// The whole document, built once.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        for part in [
            super::health::Doc::openapi(),
            super::auth::Doc::openapi(),
            super::channels::Doc::openapi(),
            super::channel_files::Doc::openapi(),
            super::dms::Doc::openapi(),
            super::client_config::Doc::openapi(),
            super::messages::Doc::openapi(),
            super::files::Doc::openapi(),
            super::uploads::Doc::openapi(),
            super::search::Doc::openapi(),
            super::admin::Doc::openapi(),
            super::ws::Doc::openapi(),
        ] {
            doc.merge(part);
        }
        doc
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document of the HTTP API")),
)]
async fn document() -> HttpResponse {
    HttpResponse::Ok().json(openapi())
}

/// `Authorization: Bearer <jwt>` from register or login, named `bearer` by the operations
/// that need it.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every error: `{"error": {"code", "message"}}` (codes: docs/api.md and `ErrorCode`).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// snake_case, one of `ErrorCode`'s.
    pub code: String,
    /// For people; never parsed.
    pub message: String,
}
