//! Fan-out between instances through Redis pub/sub.
//!
//! Every instance delivers the events it commits to its own connections at once, and
//! publishes them to one Redis channel, tagged with its instance id; it delivers what it
//! receives from there (skipping its own) to its own connections. The hub's per-channel
//! numbering puts events from different instances back into commit order and drops
//! duplicates.
//!
//! Redis never slows a request: events go to a bounded queue that one task publishes from,
//! reconnecting with backoff. When Redis is unavailable an instance keeps serving its local
//! clients and logs it once; what its queue holds is published when Redis is back (what did
//! not fit is lost to the other instances). An instance whose subscription was lost closes
//! its connections with 4009 once it is subscribed again: they may have missed events from
//! other instances, and reconnecting and fetching `?after=` is how a client catches up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{ChannelEvent, Hub};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Events waiting to be published while Redis is slow or away.
const PUBLISH_QUEUE: usize = 8192;

/// An event on the Redis channel, with the instance that published it.
#[derive(Serialize, Deserialize)]
struct Envelope<E> {
    origin: u64,
    event: E,
}

/// Opens the Redis client named by `REDIS_URL` (no connection is made yet).
pub fn client(url: &str) -> anyhow::Result<redis::Client> {
    redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))
}

/// Connects this instance to the Redis channel: starts the subscriber, which delivers other
/// instances' events to `hub`, and the publisher's task.
pub fn start(client: redis::Client, channel: String, hub: Hub) -> Publisher {
    let origin = rand::random();
    let (queue, queued) = mpsc::channel(PUBLISH_QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    tokio::spawn(publish_queued(
        client.clone(),
        channel.clone(),
        origin,
        queued,
        dropped.clone(),
    ));
    tokio::spawn(subscribe_forever(client, channel, origin, hub));
    Publisher { queue, dropped }
}

/// The sending side: cheap to clone, never waits.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Arc<ChannelEvent>>,
    /// Events that found the queue full.
    dropped: Arc<AtomicU64>,
}

impl Publisher {
    /// Queues an event for the other instances.
    pub fn publish(&self, event: Arc<ChannelEvent>) {
        if self.queue.try_send(event).is_err() {
            // Log the first of a run only; the count says how many.
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "the Redis publishing queue is full; other instances will miss events"
                );
            }
        }
    }
}

async fn publish_queued(
    client: redis::Client,
    channel: String,
    origin: u64,
    mut queued: mpsc::Receiver<Arc<ChannelEvent>>,
    dropped: Arc<AtomicU64>,
) {
    let mut connection: Option<ConnectionManager> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    // An event stays in hand until it is published.
    let mut next = queued.recv().await;
    while let Some(event) = next.take() {
        let payload = serde_json::to_vec(&Envelope {
            origin,
            event: &*event,
        })
        .expect("events serialize");
        let published = async {
            let manager = match &mut connection {
                Some(manager) => manager,
                None => connection.insert(
                    tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new(client.clone()))
                        .await??,
                ),
            };
            let _: i64 =
                tokio::time::timeout(CONNECT_TIMEOUT, manager.publish(&channel, payload)).await??;
            anyhow::Ok(())
        }
        .await;
        match published {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("publishing to Redis again");
                }
                backoff = FIRST_BACKOFF;
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    tracing::warn!(lost, "events did not fit the Redis publishing queue");
                }
                next = queued.recv().await;
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot publish to Redis; retrying with backoff");
                }
                connection = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                next = Some(event);
            }
        }
    }
}

/// Delivers what arrives on the Redis channel from other instances to `hub`, resubscribing
/// with backoff for as long as the process lives.
async fn subscribe_forever(client: redis::Client, channel: String, origin: u64, hub: Hub) {
    let mut backoff = FIRST_BACKOFF;
    let mut missed = false;
    loop {
        match subscribe(&client, &channel).await {
            Ok(mut pubsub) => {
                tracing::info!("receiving events from Redis");
                backoff = FIRST_BACKOFF;
                if std::mem::take(&mut missed) {
                    hub.resync_all().await;
                }
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    match serde_json::from_slice::<Envelope<ChannelEvent>>(
                        message.get_payload_bytes(),
                    ) {
                        Ok(envelope) if envelope.origin == origin => {}
                        Ok(envelope) => hub.dispatch(Arc::new(envelope.event)).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring an unreadable event from Redis")
                        }
                    }
                }
                tracing::warn!("lost the Redis subscription; resubscribing");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to Redis")
            }
        }
        // Whatever other instances published meanwhile is lost to this one.
        missed = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> anyhow::Result<redis::aio::PubSub> {
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
