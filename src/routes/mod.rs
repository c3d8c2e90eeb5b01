//! HTTP routes: thin handlers per resource. Each extracts, calls the work, maps the answer.

mod admin;
mod auth;
mod channels;
mod files;
mod health;
mod messages;
mod ws;

use actix_web::{HttpRequest, web};

use crate::error::AppError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(
            web::scope("/api")
                .configure(auth::configure)
                .configure(channels::configure)
                .configure(messages::configure)
                .configure(files::configure)
                .configure(admin::configure)
                .configure(ws::configure)
                .default_service(web::to(not_found)),
        );
}

pub async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// `scheme://host` the client used to reach us, for absolute links in answers.
pub fn base_url(req: &HttpRequest) -> String {
    crate::links::base_url_of(req.headers(), req.app_config().host())
}

/// Characters that must not appear in names shown to other users: control characters and
/// the bidirectional overrides that make text display differently from what it is.
pub fn is_unsafe_display_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}
