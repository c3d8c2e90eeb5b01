use actix_web::{HttpResponse, get, web};
use serde_json::json;

use crate::auth::AuthUser;
use crate::db;
use crate::error::AppError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(storage_status);
}

/// The store in use, a live check of it, and what the database knows it holds.
#[get("/admin/storage-status")]
async fn storage_status(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, AppError> {
    let (user, (object_count, total_bytes)) = state
        .db
        .run(move |conn| {
            Ok((
                db::users::find(conn, auth.id)?,
                db::files::live_totals(conn)?,
            ))
        })
        .await?;
    if !state.settings.admin_usernames.contains(&user.username) {
        return Err(AppError::forbidden("administrators only"));
    }
    let live_check = state.store.check().await;
    if let Err(e) = &live_check {
        tracing::warn!(error = ?e, "store live check failed");
    }
    let bucket = match state.store.kind() {
        "s3" => Some(state.store.location()),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "store": state.store.kind(),
        "bucket": bucket,
        "location": state.store.location(),
        "live_check_passed": live_check.is_ok(),
        "object_count": object_count,
        "total_bytes": total_bytes,
    })))
}
