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
#[openapi(paths(open))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/dms", vec![(Method::POST, web::to(open))]));
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
