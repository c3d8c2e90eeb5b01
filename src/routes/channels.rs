use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::endpoint;
use super::openapi::ErrorBody;
use crate::auth::AuthUser;
use crate::chat::is_unsafe_display_char;
use crate::db::models::{KIND_DM, User};
use crate::db::{self, channels::ROLE_MEMBER, models::Channel};
use crate::error::{AppError, ErrorCode};
use crate::realtime::Event;
use crate::state::{Announcement, AppState};

#[derive(OpenApi)]
#[openapi(paths(
    create,
    list_mine,
    list_public,
    show,
    update,
    join,
    add_member,
    members,
    leave,
    read
))]
pub(super) struct Doc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // `/channels/public` before `/channels/{id}` so "public" is never read as an id.
    cfg.service(endpoint(
        "/channels",
        vec![
            (Method::POST, web::to(create)),
            (Method::GET, web::to(list_mine)),
        ],
    ))
    .service(endpoint(
        "/channels/public",
        vec![(Method::GET, web::to(list_public))],
    ))
    .service(endpoint(
        "/channels/{id}",
        vec![
            (Method::GET, web::to(show)),
            (Method::PATCH, web::to(update)),
        ],
    ))
    .service(endpoint(
        "/channels/{id}/join",
        vec![(Method::POST, web::to(join))],
    ))
    .service(endpoint(
        "/channels/{id}/members",
        vec![
            (Method::POST, web::to(add_member)),
            (Method::GET, web::to(members)),
        ],
    ))
    .service(endpoint(
        "/channels/{id}/members/me",
        vec![(Method::DELETE, web::to(leave))],
    ))
    .service(endpoint(
        "/channels/{id}/read",
        vec![(Method::POST, web::to(read))],
    ));
}

const MAX_CHANNEL_NAME_CHARS: usize = 80;

#[derive(Deserialize, ToSchema)]
#[schema(as = CreateChannelBody)]
struct CreateBody {
    name: String,
    #[serde(default)]
    is_private: bool,
}

#[derive(Deserialize, ToSchema)]
struct UpdateBody {
    /// Files older than this many days are deleted (1 to 36500); null: keep them as long
    /// as the deployment does. Required: send null to clear it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>, required)]
    retention_days: Option<Option<i32>>,
}

/// A field that must be present but may be null: `Some(None)` for null.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A channel of the caller's, with the caller's read state in it.
#[derive(Serialize, ToSchema)]
struct MyChannel {
    #[serde(flatten)]
    channel: Channel,
    /// The caller has read up to this message id (0: nothing yet).
    last_read_id: i32,
    /// Live messages (replies included) after `last_read_id`, not the caller's own.
    unread_count: i64,
    /// Of those, the ones that mention the caller (`@username`, `@channel`).
    mention_count: i64,
    /// A direct message the caller hid from their sidebar (`POST /api/dms/{id}/hide`)
    /// and that has had no message since.
    hidden: bool,
}

#[derive(Deserialize, ToSchema)]
struct ReadBody {
    /// A message of the channel: the caller has read up to it.
    message_id: i32,
}

#[derive(Deserialize, ToSchema)]
struct AddMemberBody {
    username: String,
}

/// Creates a channel; the creator is its first member.
#[utoipa::path(post, path = "/api/channels", tag = "channels", security(("bearer" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "created", body = Channel),
        (status = 400, description = "`invalid_channel_name`", body = ErrorBody),
    ))]
async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, AppError> {
    let CreateBody { name, is_private } = body.into_inner();
    let name = name.trim().to_owned();
    if name.is_empty()
        || name.chars().count() > MAX_CHANNEL_NAME_CHARS
        || name.chars().any(is_unsafe_display_char)
    {
        return Err(AppError::bad_request(
            ErrorCode::InvalidChannelName,
            format!("a channel name is 1 to {MAX_CHANNEL_NAME_CHARS} printable characters"),
        ));
    }
    let channel = state
        .write_and_announce(move |conn| {
            let (channel, seq) = db::channels::create(conn, &name, is_private, auth.id)?;
            // The creator's open sockets start following the new channel.
            let joined = Event::MemberJoined {
                user: db::users::find(conn, auth.id)?,
            };
            Ok((channel.clone(), Announcement::one(channel.id, seq, joined)))
        })
        .await?;
    Ok(HttpResponse::Created().json(channel))
}

/// The channels the caller is a member of, direct messages included, each with the
/// caller's read state: `last_read_id`, `unread_count`, `mention_count`.
#[utoipa::path(get, path = "/api/channels", tag = "channels", security(("bearer" = [])),
    responses((status = 200, description = "the caller's channels", body = Vec<MyChannel>)))]
async fn list_mine(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<Vec<MyChannel>>, AppError> {
    let (channels, mut reads) = state
        .db
        .run(move |conn| {
            let channels = db::channels::list_for_member(conn, auth.id)?;
            let reads = db::reads::for_user(conn, auth.id)?;
            Ok((channels, reads))
        })
        .await?;
    let channels = channels
        .into_iter()
        .map(|channel| {
            let read = reads.remove(&channel.id).unwrap_or_default();
            MyChannel {
                channel,
                last_read_id: read.last_read_id,
                unread_count: read.unread_count,
                mention_count: read.mention_count,
                hidden: read.hidden,
            }
        })
        .collect();
    Ok(web::Json(channels))
}

/// The caller has read the channel up to this message. The position never moves back
/// (an older message changes nothing); when it moves, the caller's own sockets get
/// `read_updated`.
#[utoipa::path(post, path = "/api/channels/{id}/read", tag = "channels", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id")),
    request_body = ReadBody,
    responses(
        (status = 204, description = "read up to there (or further already)"),
        (status = 400, description = "`bad_request`: no message_id", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member, or not a message of the channel", body = ErrorBody),
    ))]
async fn read(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    body: web::Json<ReadBody>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    let message_id = body.into_inner().message_id;
    crate::chat::mark_read(&state, auth.id, channel_id, message_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every public channel, to browse and join.
#[utoipa::path(get, path = "/api/channels/public", tag = "channels", security(("bearer" = [])),
    responses((status = 200, description = "public channels", body = Vec<Channel>)))]
async fn list_public(
    state: web::Data<AppState>,
    _auth: AuthUser,
) -> Result<web::Json<Vec<Channel>>, AppError> {
    let channels = state
        .db
        .run(|conn| Ok(db::channels::list_public(conn)?))
        .await?;
    Ok(web::Json(channels))
}

/// One channel the caller is a member of.
#[utoipa::path(get, path = "/api/channels/{id}", tag = "channels", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id")),
    responses(
        (status = 200, description = "the channel", body = Channel),
        (status = 404, description = "`not_found`: no such channel, or not a member", body = ErrorBody),
    ))]
async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<web::Json<Channel>, AppError> {
    let channel_id = path.into_inner();
    let channel = state
        .db
        .run(move |conn| Ok(db::channels::find_for_member(conn, channel_id, auth.id)?))
        .await?;
    Ok(web::Json(channel))
}

/// Changes a channel's settings: its retention. The creator only.
#[utoipa::path(patch, path = "/api/channels/{id}", tag = "channels", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "the channel as changed", body = Channel),
        (status = 400, description = "`bad_request`: retention_days missing or out of range", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the channel's creator", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel, or not a member", body = ErrorBody),
    ))]
async fn update(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    body: web::Json<UpdateBody>,
) -> Result<web::Json<Channel>, AppError> {
    let channel_id = path.into_inner();
    let Some(retention_days) = body.into_inner().retention_days else {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "retention_days is required (null keeps files as long as the deployment does)",
        ));
    };
    if retention_days.is_some_and(|days| !(1..=36_500).contains(&days)) {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "retention_days is 1 to 36500, or null",
        ));
    }
    let channel = state
        .db
        .write(move |conn| {
            let channel = db::channels::find_for_member(conn, channel_id, auth.id)?;
            if channel.created_by != auth.id {
                return Err(AppError::forbidden(
                    "only the channel's creator may change its settings",
                ));
            }
            Ok(db::channels::set_retention(
                conn,
                channel_id,
                retention_days,
            )?)
        })
        .await?;
    Ok(web::Json(channel))
}

/// Joins a public channel (joining again changes nothing). Direct messages are private:
/// nobody joins one.
#[utoipa::path(post, path = "/api/channels/{id}/join", tag = "channels", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id")),
    responses(
        (status = 200, description = "joined", body = Channel),
        (status = 404, description = "`not_found`: no such channel, or a private one", body = ErrorBody),
    ))]
async fn join(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<web::Json<Channel>, AppError> {
    let channel_id = path.into_inner();
    let (channel, member) = state
        .db
        .run(move |conn| {
            let channel = db::channels::find(conn, channel_id)?;
            let member = db::channels::is_member(conn, channel_id, auth.id)?;
            Ok((channel, member))
        })
        .await?;
    if channel.is_private && !member {
        return Err(AppError::NotFound);
    }
    if member {
        return Ok(web::Json(channel)); // joining again changes nothing
    }
    let joined = state
        .write_and_announce(move |conn| {
            let seq = db::allocate_event_seq(conn, channel_id, 1)?;
            db::channels::add_member(conn, channel_id, auth.id, ROLE_MEMBER)?;
            let user = db::users::find(conn, auth.id)?;
            let joined = Event::MemberJoined { user };
            Ok(((), Announcement::one(channel_id, seq, joined)))
        })
        .await;
    match joined {
        // Joined by a concurrent request: the same outcome.
        Ok(()) | Err(AppError::Conflict { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(web::Json(channel))
}

/// Adds a user to a channel the caller is a member of.
#[utoipa::path(post, path = "/api/channels/{id}/members", tag = "channels", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id")),
    request_body = AddMemberBody,
    responses(
        (status = 201, description = "added", body = User),
        (status = 403, description = "`forbidden`: a direct message (nobody is added to one)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such channel or user, or the caller is not a member", body = ErrorBody),
        (status = 409, description = "`already_member`", body = ErrorBody),
    ))]
async fn add_member(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    body: web::Json<AddMemberBody>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    let username = body.into_inner().username;
    let already = || AppError::conflict(ErrorCode::AlreadyMember, "that user is already a member");
    let user = state
        .write_and_announce(move |conn| {
            let seq = db::allocate_event_seq(conn, channel_id, 1)?;
            let channel = db::channels::find_for_member(conn, channel_id, auth.id)?;
            if channel.kind == KIND_DM {
                return Err(AppError::forbidden(
                    "a direct message is between its two users only",
                ));
            }
            let user = db::users::find_by_username(conn, &username)?.ok_or(AppError::NotFound)?;
            if db::channels::is_member(conn, channel_id, user.id)? {
                return Err(already());
            }
            db::channels::add_member(conn, channel_id, user.id, ROLE_MEMBER)?;
            let joined = Event::MemberJoined { user: user.clone() };
            Ok((user, Announcement::one(channel_id, seq, joined)))
        })
        .await
        .map_err(|e| match e {
            // Added by someone else at the same moment.
            AppError::Conflict { .. } => already(),
            other => other,
        })?;
    Ok(HttpResponse::Created().json(user))
}

/// Leaves a channel: access to its messages and files ends at once.
#[utoipa::path(delete, path = "/api/channels/{id}/members/me", tag = "channels", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id")),
    responses(
        (status = 204, description = "left"),
        (status = 403, description = "`forbidden`: a direct message (it cannot be left)", body = ErrorBody),
        (status = 404, description = "`not_found`: not a member", body = ErrorBody),
    ))]
async fn leave(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    state
        .write_and_announce(move |conn| {
            let seq = db::allocate_event_seq(conn, channel_id, 1)?;
            let channel = db::channels::find_for_member(conn, channel_id, auth.id)?;
            if channel.kind == KIND_DM {
                return Err(AppError::forbidden(
                    "a direct message cannot be left: it is the one conversation of its two users",
                ));
            }
            if !db::channels::remove_member(conn, channel_id, auth.id)? {
                return Err(AppError::NotFound);
            }
            let left = Event::MemberLeft {
                user: db::users::find(conn, auth.id)?,
            };
            Ok(((), Announcement::one(channel_id, seq, left)))
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The members of a channel the caller is a member of.
#[utoipa::path(get, path = "/api/channels/{id}/members", tag = "channels", security(("bearer" = [])),
    params(("id" = i32, Path, description = "channel id")),
    responses(
        (status = 200, description = "members, by username", body = Vec<User>),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn members(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    let members = state
        .db
        .run(move |conn| {
            db::channels::find_for_member(conn, channel_id, auth.id)?;
            Ok(db::channels::members(conn, channel_id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(members))
}
