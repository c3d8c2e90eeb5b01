//! Fan-out between instances through Redis pub/sub.
//!
//! Every instance publishes the events it commits to one Redis channel and delivers what it
//! receives from it (its own events included) to its own connections, so each connection
//! gets each event once. The hub's per-channel numbering puts events from different
//! instances back into commit order and drops duplicates.
//!
//! When Redis is unavailable an instance keeps serving its local clients (the publisher
//! falls back to local delivery), logs it, and reconnects with backoff; clients on other
//! instances catch up with `GET .../messages?after=`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

use super::{ChannelEvent, Hub};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Publisher {
    client: redis::Client,
    channel: Arc<str>,
    connection: Arc<Mutex<Option<ConnectionManager>>>,
}

impl Publisher {
    pub fn new(client: redis::Client, channel: &str) -> Self {
        Publisher {
            client,
            channel: Arc::from(channel),
            connection: Arc::default(),
        }
    }

    pub async fn publish(&self, event: &ChannelEvent) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(event)?;
        let mut connection = {
            let mut slot = self.connection.lock().await;
            match slot.as_ref() {
                Some(connection) => connection.clone(),
                None => {
                    // The manager reconnects by itself once made; making it needs Redis up.
                    let made = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        ConnectionManager::new(self.client.clone()),
                    )
                    .await??;
                    slot.insert(made).clone()
                }
            }
        };
        let _: i64 =
            tokio::time::timeout(CONNECT_TIMEOUT, connection.publish(&*self.channel, payload))
                .await??;
        Ok(())
    }
}

/// Opens the Redis client named by `REDIS_URL` (no connection is made yet).
pub fn client(url: &str) -> anyhow::Result<redis::Client> {
    redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))
}

/// Delivers what arrives on the Redis channel to this instance's hub, reconnecting with
/// backoff for as long as the process lives.
pub fn spawn_subscriber(client: redis::Client, channel: String, hub: Hub) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            match subscribe(&client, &channel).await {
                Ok(mut pubsub) => {
                    tracing::info!("receiving events from Redis");
                    backoff = Duration::from_millis(250);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        match serde_json::from_slice::<ChannelEvent>(message.get_payload_bytes()) {
                            Ok(event) => hub.dispatch(Arc::new(event)).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring an unreadable event from Redis")
                            }
                        }
                    }
                    tracing::warn!("lost the Redis subscription; reconnecting");
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to Redis")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

async fn subscribe(client: &redis::Client, channel: &str) -> anyhow::Result<redis::aio::PubSub> {
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
