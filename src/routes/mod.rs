//! HTTP routes: thin handlers per resource. Each extracts, calls the work, maps the answer.

mod admin;
mod auth;
mod channel_files;
mod channels;
mod client_config;
mod dms;
mod files;
mod health;
mod messages;
mod openapi;
mod search;
mod uploads;
mod ws;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, Resource, Route, web};

use crate::error::AppError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(health::configure).service(
        web::scope("/api")
            .configure(auth::configure)
            .configure(channels::configure)
            .configure(channel_files::configure)
            .configure(dms::configure)
            .configure(messages::configure)
            .configure(files::configure)
            .configure(uploads::configure)
            .configure(search::configure)
            .configure(admin::configure)
            .configure(client_config::configure)
            .configure(ws::configure)
            .configure(openapi::configure)
            .default_service(web::to(not_found)),
    );
}

/// One path and the handler of each method it takes; any other method is answered
/// `405 method_not_allowed` with `Allow`, instead of falling through to a 404.
fn endpoint(path: &str, routes: Vec<(Method, Route)>) -> Resource {
    let mut allow: Vec<&str> = Vec::new();
    for (method, _) in &routes {
        if !allow.contains(&method.as_str()) {
            allow.push(method.as_str());
        }
    }
    let allow = allow.join(", ");
    let mut resource = web::resource(path).default_service(web::to(move || {
        let allow = allow.clone();
        async move { Err::<HttpResponse, _>(AppError::method_not_allowed(allow)) }
    }));
    for (method, route) in routes {
        resource = resource.route(route.method(method));
    }
    resource
}

pub async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// `scheme://host` the client used to reach us, for absolute links in answers. A proxy's
/// `Forwarded` / `X-Forwarded-*` headers count only when the TCP peer is one of
/// `TRUSTED_PROXIES`; from anyone else they could point links at another host.
pub fn base_url(req: &HttpRequest) -> String {
    let trusted = req
        .app_data::<web::Data<crate::state::AppState>>()
        .map(|state| state.settings.server.trusted_proxies.as_slice())
        .unwrap_or_default();
    let from_proxy = crate::client_addr::peer_is_trusted(req.peer_addr().map(|a| a.ip()), trusted);
    crate::links::base_url_of(req.headers(), req.app_config().host(), from_proxy)
}
