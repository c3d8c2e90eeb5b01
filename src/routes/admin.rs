use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::endpoint;
use super::openapi::ErrorBody;
use crate::auth::AuthUser;
use crate::db;
use crate::error::AppError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(paths(storage_status, storage_report, realtime_status))]
pub(super) struct Doc;

#[derive(Serialize, ToSchema)]
struct StorageStatus {
    /// `s3` or `local`
    store: &'static str,
    /// The bucket, for S3.
    bucket: Option<String>,
    /// The bucket or the directory.
    location: String,
    live_check_passed: bool,
    /// Live files the database knows of, and their bytes.
    object_count: i64,
    total_bytes: i64,
}

/// What the live (not deleted) files take, from the database: in all, and the largest 20
/// uploaders, channels and content types by bytes.
#[derive(Serialize, ToSchema)]
struct StorageReport {
    total_bytes: i64,
    file_count: i64,
    by_user: Vec<db::files::UsageByUser>,
    by_channel: Vec<db::files::UsageByChannel>,
    by_type: Vec<db::files::UsageByType>,
}

#[derive(Serialize, ToSchema)]
struct RealtimeStatus {
    /// This instance's open WebSockets.
    connections: u64,
    frames_queued: u64,
    /// Closed with 4008 (too slow) since start.
    slow_disconnects: u64,
    /// Closed with 4009 (events missed) since start.
    resync_disconnects: u64,
    /// Whether events cross instances through Redis.
    redis: bool,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/admin/storage-status",
        vec![(Method::GET, web::to(storage_status))],
    ))
    .service(endpoint(
        "/admin/storage-report",
        vec![(Method::GET, web::to(storage_report))],
    ))
    .service(endpoint(
        "/admin/realtime-status",
        vec![(Method::GET, web::to(realtime_status))],
    ));
}

/// Refuses users who were not granted administration (`chatserver admin grant`).
async fn require_admin(state: &AppState, auth: AuthUser) -> Result<(), AppError> {
    let admin = state
        .db
        .run(move |conn| Ok(db::users::is_admin(conn, auth.id)?))
        .await?;
    if !admin {
        return Err(AppError::forbidden("administrators only"));
    }
    Ok(())
}

/// The store in use, a live check of it, and what the database knows it holds.
#[utoipa::path(get, path = "/api/admin/storage-status", tag = "operations", security(("bearer" = [])),
    responses(
        (status = 200, description = "the store", body = StorageStatus),
        (status = 403, description = "`forbidden`: administrators only", body = ErrorBody),
    ))]
async fn storage_status(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, AppError> {
    require_admin(&state, auth).await?;
    let (object_count, total_bytes) = state
        .db
        .run(|conn| Ok(db::files::live_totals(conn)?))
        .await?;
    let live_check = state.store.check().await;
    if let Err(e) = &live_check {
        tracing::warn!(error = ?e, "store live check failed");
    }
    let bucket = match state.store.kind() {
        "s3" => Some(state.store.location()),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(StorageStatus {
        store: state.store.kind(),
        bucket,
        location: state.store.location(),
        live_check_passed: live_check.is_ok(),
        object_count,
        total_bytes,
    }))
}

/// What the live files take, in all and by uploader, channel and content type (the largest
/// 20 of each by bytes), summed by the database. The store itself is not read: `chatserver
/// verify` checks that it agrees.
#[utoipa::path(get, path = "/api/admin/storage-report", tag = "operations", security(("bearer" = [])),
    responses(
        (status = 200, description = "usage of the live files", body = StorageReport),
        (status = 403, description = "`forbidden`: administrators only", body = ErrorBody),
    ))]
async fn storage_report(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, AppError> {
    require_admin(&state, auth).await?;
    let report = state
        .db
        .run(|conn| {
            // One snapshot, so the breakdowns add up to the totals even while files come
            // and go.
            db::files::in_one_snapshot(conn, |conn| {
                let (file_count, total_bytes) = db::files::live_totals(conn)?;
                Ok(StorageReport {
                    total_bytes,
                    file_count,
                    by_user: db::files::usage_by_user(conn)?,
                    by_channel: db::files::usage_by_channel(conn)?,
                    by_type: db::files::usage_by_type(conn)?,
                })
            })
            .map_err(AppError::from)
        })
        .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// This instance's WebSockets: how many are open, and how many were closed for falling
/// behind (4008) or for missing events (4009) since it started.
#[utoipa::path(get, path = "/api/admin/realtime-status", tag = "operations", security(("bearer" = [])),
    responses(
        (status = 200, description = "this instance's sockets", body = RealtimeStatus),
        (status = 403, description = "`forbidden`: administrators only", body = ErrorBody),
    ))]
async fn realtime_status(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, AppError> {
    require_admin(&state, auth).await?;
    let stats = state.events.hub().stats();
    let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Ok(HttpResponse::Ok().json(RealtimeStatus {
        connections: read(&stats.connections),
        frames_queued: read(&stats.frames_queued),
        slow_disconnects: read(&stats.slow_disconnects),
        resync_disconnects: read(&stats.resync_disconnects),
        redis: state.settings.realtime.redis_url.is_some(),
    }))
}
