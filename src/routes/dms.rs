use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use super::endpoint;
use super::openapi::ErrorBody;
use crate::auth::AuthUser;
use crate::chat;
use crate::db::models::Channel;
use crate::error::AppError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(paths(open, hide))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/dms", vec![(Method::POST, web::to(open))]))
        .service(endpoint(
            "/dms/{id}/hide",
            vec![(Method::POST, web::to(hide))],
        ));
}

#[derive(Deserialize, ToSchema)]
struct OpenDmBody {
    /// The other user.
    username: String,
}

/// The direct-message channel of the caller and another user: the existing one (`200`),
/// or a new one (`201`; both users' sockets get `member_joined` and follow it). One per
/// pair, even when both create it at once. Private, `"kind": "dm"`; nobody joins it, is
/// added to it or leaves it.
#[utoipa::path(post, path = "/api/dms", tag = "channels", security(("bearer" = [])),
    request_body = OpenDmBody,
    responses(
        (status = 200, description = "the existing conversation", body = Channel),
        (status = 201, description = "a new conversation", body = Channel),
        (status = 400, description = "`bad_request`: the caller's own username", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    ))]
async fn open(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<OpenDmBody>,
) -> Result<HttpResponse, AppError> {
    let username = body.into_inner().username;
    let (channel, created) = chat::open_dm(&state, auth.id, username).await?;
    Ok(if created {
        HttpResponse::Created().json(channel)
    } else {
        HttpResponse::Ok().json(channel)
    })
}

/// Hides a direct message from the caller's sidebar: `GET /api/channels` lists it with
/// `"hidden": true`, and the caller's sockets get `dm_hidden`. Nothing is lost and the
/// other user sees no change. The next message in it (from either user), or `POST /api/dms`
/// for it again, shows it again.
#[utoipa::path(post, path = "/api/dms/{id}/hide", tag = "channels", security(("bearer" = [])),
    params(("id" = i32, Path, description = "the direct message's channel id")),
    responses(
        (status = 204, description = "hidden (or hidden already)"),
        (status = 400, description = "`bad_request`: not a direct message (leave it instead)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel, or not a member", body = ErrorBody),
    ))]
async fn hide(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<HttpResponse, AppError> {
    chat::hide_dm(&state, auth.id, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
