use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::endpoint;
use crate::auth::AuthUser;
use crate::chat::is_unsafe_display_char;
use crate::db::{self, channels::ROLE_MEMBER, models::Channel};
use crate::error::{AppError, ErrorCode};
use crate::realtime::Event;
use crate::state::{Announcement, AppState};

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
        vec![(Method::GET, web::to(show))],
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
    ));
}

const MAX_CHANNEL_NAME_CHARS: usize = 80;

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    #[serde(default)]
    is_private: bool,
}

#[derive(Deserialize)]
struct AddMemberBody {
    username: String,
}

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

async fn list_mine(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<Vec<Channel>>, AppError> {
    let channels = state
        .db
        .run(move |conn| Ok(db::channels::list_for_member(conn, auth.id)?))
        .await?;
    Ok(web::Json(channels))
}

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

/// Joining is for public channels; a private one answers 404 as if it did not exist.
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

/// Any member may add another user.
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
            db::channels::find_for_member(conn, channel_id, auth.id)?;
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

/// Leaving ends access to the channel's messages and files at once.
async fn leave(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    state
        .write_and_announce(move |conn| {
            let seq = db::allocate_event_seq(conn, channel_id, 1)?;
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
