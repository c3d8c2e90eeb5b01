use std::sync::Arc;

use tracing::Instrument;

use crate::auth::TokenService;
use crate::auth::passwords::PasswordHashing;
use crate::config::Settings;
use crate::db::{AnyConnection, Db};
use crate::error::AppError;
use crate::links::DownloadLinks;
use crate::metrics::Metrics;
use crate::ratelimit::{AuthLimits, RateLimiter};
use crate::realtime::{Event, EventBus};
use crate::storage::Store;
use crate::uploads::{UploadRules, UploadSlots};

/// What every handler can reach, shared as `web::Data<AppState>`.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub store: Store,
    pub upload_rules: Arc<UploadRules>,
    /// Uploads in flight per user (`MAX_CONCURRENT_UPLOADS_PER_USER`).
    pub upload_slots: UploadSlots,
    pub tokens: TokenService,
    pub links: DownloadLinks,
    pub download_limiter: RateLimiter,
    /// `@channel` mentions, per (user, channel): `chat::EVERYONE_MENTIONS_PER_MINUTE`.
    pub everyone_mentions: RateLimiter<(i32, i32)>,
    /// Logins and registrations, per client address (and account).
    pub auth_limits: AuthLimits,
    /// The threads that hash passwords (`PASSWORD_HASH_CONCURRENCY`).
    pub passwords: PasswordHashing,
    pub events: EventBus,
    /// This instance's metrics (served on `METRICS_BIND_ADDR`).
    pub metrics: Metrics,
}

/// The events a write announces once committed, numbered from `first_seq` (which the write
/// took from the channel with `db::allocate_event_seq`).
pub struct Announcement {
    pub channel_id: i32,
    pub first_seq: i64,
    pub events: Vec<Event>,
}

impl Announcement {
    pub fn one(channel_id: i32, seq: i64, event: Event) -> Self {
        Announcement {
            channel_id,
            first_seq: seq,
            events: vec![event],
        }
    }

    /// Nothing to announce (a write that turned out to change nothing).
    pub fn none(channel_id: i32) -> Self {
        Announcement {
            channel_id,
            first_seq: 0,
            events: Vec::new(),
        }
    }
}

impl AppState {
    /// Runs `work` in a write transaction and publishes what it announces after the commit.
    ///
    /// In a task of its own, so the commit and its announcement are never separated by the
    /// caller being dropped (actix-web lets a request run on when its client hangs up, but
    /// drops what is still running when a shutdown's grace period ends): an event committed
    /// but never published would be a hole in its channel's sequence, and a hole closes the
    /// channel's sockets with 4009.
    pub async fn write_and_announce<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<(T, Announcement), AppError> + Send + 'static,
        T: Send + 'static,
    {
        let (db, events) = (self.db.clone(), self.events.clone());
        let task = async move {
            let (value, announcement) = db.write(work).await?;
            let Announcement {
                channel_id,
                first_seq,
                events: announced,
            } = announcement;
            events.publish_all(channel_id, first_seq, announced).await;
            Ok(value)
        };
        // The request's span goes along, so the write's log lines carry its request id.
        tokio::spawn(task.instrument(tracing::Span::current()))
            .await
            .map_err(|e| AppError::Internal(anyhow::anyhow!("write task failed: {e}")))?
    }
}
