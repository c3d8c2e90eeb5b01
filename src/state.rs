use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::TokenService;
use crate::config::Settings;
use crate::db::Db;
use crate::links::DownloadLinks;
use crate::ratelimit::RateLimiter;
use crate::realtime::EventBus;
use crate::storage::Store;
use crate::uploads::UploadRules;

/// What every handler can reach, shared as `web::Data<AppState>`.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub store: Store,
    pub upload_rules: Arc<UploadRules>,
    pub tokens: TokenService,
    pub links: DownloadLinks,
    pub download_limiter: RateLimiter,
    /// Keyed by username.
    pub login_limiter: RateLimiter<String>,
    /// Permits to hash a password (`PASSWORD_HASH_CONCURRENCY`).
    pub password_hashing: Arc<Semaphore>,
    pub events: EventBus,
}
