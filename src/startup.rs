//! Building the application: pools, migrations, the listener and the HTTP server.
//! (zero2prod's shape: `build` binds, so tests can ask for port 0 and read the real port.)

use std::net::TcpListener;
use std::sync::Arc;

use std::time::{Duration, Instant};

use actix_http::HttpService;
use actix_server::GracefulShutdownSignal;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, map_config};
use actix_web::dev::{AppConfig, Server};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, web};
use anyhow::Context;

use crate::auth::TokenService;
use crate::auth::passwords::PasswordHashing;
use crate::config::Settings;
use crate::db::{self, Db};
use crate::error::extractors;
use crate::links::DownloadLinks;
use crate::metrics::{self, Metrics};
use crate::ratelimit::{AuthLimits, RateLimiter};
use crate::realtime::hub::{Hub, HubConfig};
use crate::realtime::{EventBus, redis_bridge};
use crate::state::AppState;
use crate::storage::Store;
use crate::uploads::{UploadRules, UploadSlots};
use crate::{realtime, routes, telemetry};

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    /// Resolves when a graceful shutdown (SIGTERM) begins.
    shutdown: GracefulShutdownSignal,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let state = build_state(settings).await?;
        let listener = TcpListener::bind(&state.settings.server.bind_addr)
            .with_context(|| format!("binding {}", state.settings.server.bind_addr))?;
        let port = listener.local_addr()?.port();
        let metrics_listener = match &state.settings.server.metrics_bind_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .with_context(|| format!("binding METRICS_BIND_ADDR {addr}"))?,
            ),
            None => None,
        };
        let metrics_port = match &metrics_listener {
            Some(listener) => Some(listener.local_addr()?.port()),
            None => None,
        };
        let (server, shutdown) = run(listener, metrics_listener, state.clone())?;
        crate::gc::spawn_background(&state);
        crate::media::worker::spawn(&state);
        if let (Some(addr), Some(port)) = (&state.settings.server.metrics_bind_addr, metrics_port) {
            tracing::info!(address = %listener_address(addr, port), "serving metrics");
        }
        tracing::info!(
            address = %listener_address(&state.settings.server.bind_addr, port),
            database = state.db.backend(),
            shutdown_grace_seconds = state.settings.server.shutdown_grace_seconds,
            // The SQLite file (a PostgreSQL URL may carry a password: never logged).
            sqlite_file = match &state.settings.database {
                crate::config::DatabaseTarget::Sqlite(path) => path.display().to_string(),
                crate::config::DatabaseTarget::Postgres(_) => String::new(),
            },
            "listening"
        );
        Ok(Application {
            port,
            metrics_port,
            server,
            shutdown,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics listener's port, when `METRICS_BIND_ADDR` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the server is stopped. On SIGTERM (a graceful shutdown) the listeners
    /// stop accepting, WebSockets are closed with 1001 so that their clients reconnect
    /// elsewhere, requests in flight (uploads) get up to `SHUTDOWN_GRACE_SECONDS` to finish,
    /// and the events queued for Redis are published within what is left of that time.
    /// (SIGINT and SIGQUIT stop at once, as actix does.)
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            shutdown,
            state,
            ..
        } = self;
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_seconds);
        tokio::pin!(server);
        let stopped = tokio::select! {
            stopped = &mut server => stopped,
            () = shutdown.notified() => {
                let deadline = Instant::now() + grace;
                tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
                state.events.hub().shut_down().await;
                let stopped = server.await;
                // Nothing publishes any more. At least a moment for Redis, even past the grace.
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1));
                if state.events.flush(left).await && state.settings.realtime.redis_url.is_some() {
                    tracing::info!("the Redis publishing queue is flushed");
                }
                stopped
            }
        };
        tracing::info!("stopped");
        stopped
    }
}

/// Connects the database (applying migrations) and the file store: all that the `gc`
/// command needs.
pub async fn connect_storage(
    settings: &Settings,
    metrics: &Metrics,
) -> anyhow::Result<(Db, Store)> {
    let admin_usernames = settings.auth.admin_usernames.clone();
    let db = {
        let (target, busy_timeout) = (settings.database.clone(), settings.database_busy_timeout);
        tokio::task::spawn_blocking(move || -> anyhow::Result<Db> {
            let db = Db::connect_with(&target, busy_timeout)?;
            let applied = db.migrate()?;
            if applied > 0 {
                tracing::info!(applied, "database migrations applied");
            }
            Ok(db)
        })
        .await??
        .with_metrics(metrics.clone())
    };
    grant_configured_admins(&db, &admin_usernames).await?;
    let key_prefix = match &settings.store.key_prefix {
        Some(prefix) => prefix.clone(),
        None => {
            // Derived from the database: a random name recorded on first start, so two
            // deployments (an SQLite and a PostgreSQL run, or two databases on one bucket)
            // never share one.
            let proposed = format!("d{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            db.write(move |conn| Ok(db::deployment::key_prefix(conn, &proposed)?))
                .await?
        }
    };
    let store = Store::from_settings(settings, &key_prefix, metrics.clone()).await?;
    match store.check().await {
        Ok(()) => {
            tracing::info!(store = store.kind(), location = %store.location(), "file store ready")
        }
        // Chat keeps working; uploads answer 503 and /readyz reports it until it answers.
        Err(e) => {
            tracing::error!(store = store.kind(), location = %store.location(), error = ?e, "file store does not answer")
        }
    }
    Ok((db, store))
}

/// Connects the database and the store, starts the hub (and the Redis bridge) and
/// assembles the shared state.
pub async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    let settings = Arc::new(settings);
    let metrics = Metrics::new();
    let (db, store) = connect_storage(&settings, &metrics).await?;
    // Multipart uploads a browser left are aborted by the bucket after 2 days, should the
    // sweeper not run (it ends them after UPLOAD_SESSION_TTL_SECONDS).
    store
        .apply_bucket_rules(2, &settings.store.s3_cors_origins)
        .await;
    let links = DownloadLinks::new(
        &settings.auth.jwt_secret,
        settings.auth.download_url_ttl_seconds,
    );
    let hub = Hub::start(
        links.clone(),
        HubConfig {
            max_connections_per_user: settings.realtime.ws_max_connections_per_user,
        },
        metrics.clone(),
    );
    let redis = match &settings.realtime.redis_url {
        Some(url) => {
            let client = redis_bridge::client(url.expose())?;
            let channel = settings.realtime.redis_channel.clone();
            tracing::info!(channel, "events fan out across instances through Redis");
            Some(redis_bridge::start(
                client,
                channel,
                hub.clone(),
                settings.realtime.redis_publish_queue,
            ))
        }
        None => None,
    };
    Ok(AppState {
        tokens: TokenService::new(&settings.auth.jwt_secret, settings.auth.jwt_ttl_seconds),
        links,
        download_limiter: RateLimiter::per_minute(settings.limits.download_links_per_minute),
        everyone_mentions: RateLimiter::per_minute(crate::chat::EVERYONE_MENTIONS_PER_MINUTE),
        auth_limits: AuthLimits::new(&settings.limits),
        passwords: PasswordHashing::start(settings.auth.password_hash_concurrency)
            .context("starting the password hashing threads")?,
        upload_rules: Arc::new(UploadRules::from_settings(&settings)),
        upload_slots: UploadSlots::new(settings.limits.max_concurrent_uploads_per_user),
        events: EventBus::new(hub, redis),
        metrics,
        store,
        db,
        settings,
    })
}

/// The HTTP server: actix-web's `App` for every request, and `realtime::upgrade` for
/// WebSocket upgrades, which then own their sockets. (This is what `HttpServer` builds,
/// plus the upgrade service it does not expose.) With a metrics listener, `GET /metrics`
/// is served there, and only there.
fn run(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
) -> anyhow::Result<(Server, GracefulShutdownSignal)> {
    let workers = state.settings.server.workers;
    let grace = state.settings.server.shutdown_grace_seconds;
    let static_dir = state.settings.server.static_dir.clone();
    let policy = content_security_policy(&state.settings);
    let data = web::Data::new(state);
    let metrics_data = data.clone();
    let address = listener.local_addr()?;
    let builder = actix_server::Server::build()
        .workers(workers)
        // SIGTERM: stop accepting, and give requests in flight this long to finish.
        .shutdown_timeout(grace);
    let shutdown = builder.graceful_shutdown_signal();
    let mut builder = builder.listen("chatserver", listener, move || {
        let upgrades = realtime::upgrade::service(data.clone());
        let data = data.clone();
        let static_dir = static_dir.clone();
        let policy = policy.clone();
        let app = move || {
            App::new()
                // Defaults: a response that sets its own (a served file's sandbox) keeps it.
                .wrap(
                    DefaultHeaders::new()
                        .add((header::CONTENT_SECURITY_POLICY, policy.clone()))
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                        .add((header::REFERRER_POLICY, "no-referrer")),
                )
                .wrap(from_fn(telemetry::log_requests))
                .wrap(from_fn(metrics::track_requests))
                .app_data(data.clone())
                .app_data(extractors::json_config())
                .app_data(extractors::query_config())
                .app_data(extractors::path_config())
                .configure(routes::configure)
                .service(
                    actix_files::Files::new("/", &static_dir)
                        .index_file("index.html")
                        .default_handler(web::to(routes::not_found)),
                )
        };
        let app = app()
            .into_factory()
            .map_err(|e: actix_web::Error| e.error_response());
        HttpService::build()
            // Events are small writes in quick succession: without this, Nagle's
            // algorithm holds a WebSocket's next frame until the client acknowledges
            // the last one (a delayed ACK).
            .tcp_nodelay(true)
            .client_disconnect_timeout(Duration::from_secs(1))
            .local_addr(address)
            .upgrade(upgrades)
            // The default config's host only stands in for a missing `Host` header
            // (HTTP/1.1 requires one); links are built from the headers.
            .finish(map_config(app, |_| AppConfig::default()))
            .tcp()
    })?;
    if let Some(listener) = metrics_listener {
        let address = listener.local_addr()?;
        builder = builder.listen("metrics", listener, move || {
            let app = App::new()
                .app_data(metrics_data.clone())
                .route("/metrics", web::get().to(metrics::scrape))
                .default_service(web::to(routes::not_found))
                .into_factory()
                .map_err(|e: actix_web::Error| e.error_response());
            HttpService::build()
                .local_addr(address)
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })?;
    }
    Ok((builder.run(), shutdown))
}

/// `ADMIN_USERNAMES` grants administration to accounts that exist when the server starts,
/// never to one registered later under that name (whoever registered `admin` first would be
/// an administrator). The grant is recorded; `chatserver admin grant|revoke` is the tool.
async fn grant_configured_admins(db: &Db, usernames: &[String]) -> anyhow::Result<()> {
    for username in usernames {
        let name = username.clone();
        let granted = db
            .write(move |conn| Ok(db::users::set_admin(conn, &name, true)?))
            .await
            .map_err(|e| anyhow::anyhow!("granting ADMIN_USERNAMES: {e}"))?;
        if granted {
            tracing::warn!(
                username,
                "ADMIN_USERNAMES: administration granted (and recorded); prefer `chatserver admin grant`"
            );
        } else {
            tracing::warn!(
                username,
                "ADMIN_USERNAMES names no existing account: nothing granted, and registering it later grants nothing"
            );
        }
    }
    Ok(())
}

/// The browser client's policy: its own scripts and styles only, never framed. Images and
/// media may also come from the S3 store, where file links redirect.
fn content_security_policy(settings: &Settings) -> String {
    // Presigned URLs point at the endpoint browsers use (path-style addressing): images and
    // media load from it, and direct uploads PUT their parts to it.
    let store = settings.store.s3.as_ref().map(|s3| {
        match s3.public_endpoint.as_ref().or(s3.endpoint.as_ref()) {
            Some(endpoint) => origin_of(endpoint),
            None => "https://*.amazonaws.com".to_owned(),
        }
    });
    let (media, connect) = match &store {
        Some(store) => (
            format!("'self' blob: data: {store}"),
            format!("'self' {store}"),
        ),
        None => ("'self' blob: data:".to_owned(), "'self'".to_owned()),
    };
    format!(
        "default-src 'self'; img-src {media}; media-src {media}; connect-src {connect}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            format!("{scheme}://{host}")
        }
        None => url.to_owned(),
    }
}

fn listener_address(bind_addr: &str, port: u16) -> String {
    match bind_addr.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{port}"),
        None => bind_addr.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pairs: &[(&str, &str)]) -> String {
        let settings = Settings::from_lookup(|key| {
            (key == "JWT_SECRET").then(|| "k".repeat(32)).or_else(|| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            })
        })
        .unwrap();
        content_security_policy(&settings)
    }

    #[test]
    fn images_may_come_from_the_s3_store_that_links_redirect_to() {
        assert!(policy(&[]).contains("img-src 'self' blob: data:;"));
        let minio = policy(&[
            ("AWS_S3_BUCKET_NAME", "chat"),
            ("AWS_S3_ENDPOINT", "http://127.0.0.1:9000/"),
        ]);
        assert!(
            minio.contains("img-src 'self' blob: data: http://127.0.0.1:9000;"),
            "{minio}"
        );
        // Direct uploads PUT their parts there.
        assert!(
            minio.contains("connect-src 'self' http://127.0.0.1:9000;"),
            "{minio}"
        );
        let aws = policy(&[("AWS_S3_BUCKET_NAME", "chat")]);
        assert!(
            aws.contains("media-src 'self' blob: data: https://*.amazonaws.com;"),
            "{aws}"
        );
        assert!(
            aws.contains("connect-src 'self' https://*.amazonaws.com;"),
            "{aws}"
        );
        // Browsers reach the store elsewhere than the server does.
        let public = policy(&[
            ("AWS_S3_BUCKET_NAME", "chat"),
            ("AWS_S3_ENDPOINT", "http://minio.internal:9000"),
            ("AWS_S3_PUBLIC_ENDPOINT", "https://files.example.com"),
        ]);
        assert!(
            public.contains("connect-src 'self' https://files.example.com;")
                && !public.contains("minio.internal"),
            "{public}"
        );
    }
}
