use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;

use super::base_url;
use crate::auth::AuthUser;
use crate::db::{self, messages::PageRequest, models::Message};
use crate::error::AppError;
use crate::realtime::Event;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_json).service(list);
}

pub const MAX_CONTENT_CHARS: usize = 4000;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

#[derive(Deserialize)]
struct CreateBody {
    content: String,
}

#[derive(Deserialize)]
struct ListQuery {
    before: Option<i32>,
    after: Option<i32>,
    limit: Option<i64>,
}

/// Content is 1 to 4000 characters, and not only white space.
pub fn validate_content(content: &str) -> Result<(), AppError> {
    if content.trim().is_empty() || content.chars().count() > MAX_CONTENT_CHARS {
        return Err(AppError::bad_request(
            "invalid_content",
            format!("a message has 1 to {MAX_CONTENT_CHARS} characters"),
        ));
    }
    Ok(())
}

#[post("/channels/{id}/messages")]
async fn create_json(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    let content = body.into_inner().content;
    validate_content(&content)?;
    let message = post_message(&state, auth.id, channel_id, content).await?;
    Ok(HttpResponse::Created().json(message))
}

/// Stores a text message and announces it; shared by REST and the socket.
pub async fn post_message(
    state: &AppState,
    user_id: i32,
    channel_id: i32,
    content: String,
) -> Result<Message, AppError> {
    let (row, user) = state
        .db
        .run(move |conn| {
            use diesel::Connection;
            conn.transaction(|conn| {
                db::channels::find_for_member(conn, channel_id, user_id)?;
                let row = db::messages::insert(conn, channel_id, user_id, &content)?;
                let user = db::users::find(conn, user_id)?;
                Ok::<_, AppError>((row, user))
            })
        })
        .await?;
    let message = Message::new(row, user.username, Vec::new());
    state
        .events
        .publish(channel_id, Event::MessageCreated(message.clone()));
    Ok(message)
}

#[get("/channels/{id}/messages")]
async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<i32>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let channel_id = path.into_inner();
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit < 1 {
        return Err(AppError::bad_request(
            "bad_request",
            "limit must be at least 1",
        ));
    }
    let request = PageRequest {
        before: query.before,
        after: query.after,
        limit: limit.min(MAX_PAGE),
    };
    let page = state
        .db
        .run(move |conn| {
            db::channels::find_for_member(conn, channel_id, auth.id)?;
            Ok(db::messages::page(conn, channel_id, request)?)
        })
        .await?;
    let base = base_url(&req);
    let messages: Vec<_> = page
        .messages
        .into_iter()
        .map(|parts| state.message_view(&base, auth.id, parts))
        .collect();
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "messages": messages, "has_more": page.has_more })))
}
