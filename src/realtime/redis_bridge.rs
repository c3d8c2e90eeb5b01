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
//! clients and logs it once; what its queue holds is published when Redis is back. What did
//! not fit is lost to the other instances, so the instance then tells them which channels
//! lost events, and they close those channels' connections with 4009 (a gap in a channel's
//! numbering would show them only if a later event came). An instance whose subscription
//! was lost closes all its connections with 4009 once it is subscribed again. Either way,
//! reconnecting and fetching `?after=` is how a client catches up.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{ChannelEvent, Hub};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Channels named in one notice of lost events; beyond this, the notice says "all".
const MAX_LOST_CHANNELS: usize = 10_000;

/// A message on the Redis channel, from the instance `origin`: an event, or a notice that
/// events of some channels will never come.
#[derive(Serialize, Deserialize)]
struct Envelope<E> {
    origin: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<E>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost: Option<Lost>,
}

/// Channels whose events did not fit the publishing queue.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Lost {
    channels: HashSet<i32>,
    /// Too many channels to name: every channel may have lost events.
    all: bool,
}

impl Lost {
    fn add(&mut self, channel_id: i32) {
        if self.all {
            return;
        }
        if self.channels.len() >= MAX_LOST_CHANNELS {
            *self = Lost {
                channels: HashSet::new(),
                all: true,
            };
        } else {
            self.channels.insert(channel_id);
        }
    }

    fn merge(&mut self, other: Lost) {
        if other.all {
            self.all = true;
            self.channels.clear();
        } else {
            other.channels.into_iter().for_each(|id| self.add(id));
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.channels.is_empty()
    }
}

/// Opens the Redis client named by `REDIS_URL` (no connection is made yet).
pub fn client(url: &str) -> anyhow::Result<redis::Client> {
    redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))
}

/// Connects this instance to the Redis channel: starts the subscriber, which delivers other
/// instances' events to `hub`, and the publisher's task, which holds at most `queue_capacity`
/// events while Redis is away.
pub fn start(client: redis::Client, channel: String, hub: Hub, queue_capacity: usize) -> Publisher {
    let origin = rand::random();
    let (queue, queued) = mpsc::channel(queue_capacity.max(1));
    let dropped = Arc::new(Mutex::new(Dropped::default()));
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
    queue: mpsc::Sender<Queued>,
    dropped: Arc<Mutex<Dropped>>,
}

/// What the publishing task takes, in order.
enum Queued {
    Event(Arc<ChannelEvent>),
    /// Answered once everything queued before it has been published.
    Flush(oneshot::Sender<()>),
}

/// What found the publishing queue full since the last notice.
#[derive(Default)]
struct Dropped {
    events: u64,
    channels: Lost,
}

impl Publisher {
    /// Queues an event for the other instances.
    pub fn publish(&self, event: Arc<ChannelEvent>) {
        let Err(refused) = self.queue.try_send(Queued::Event(event)) else {
            return;
        };
        let Queued::Event(event) = refused.into_inner() else {
            unreachable!("an event was sent")
        };
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        // Log the first of a run only; the count says how many.
        if dropped.events == 0 {
            tracing::warn!("the Redis publishing queue is full; other instances will miss events");
        }
        dropped.events += 1;
        // Typing notices are not numbered, and missing one loses nothing.
        if event.seq.is_some() {
            dropped.channels.add(event.channel_id);
        }
    }

    /// Waits until every event queued so far has been published (and lost ones announced),
    /// for at most `timeout`; whether that happened. For a shutdown: events not published
    /// are lost to the other instances.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, flushed) = oneshot::channel();
        let waited = tokio::time::timeout(timeout, async {
            self.queue.send(Queued::Flush(done)).await.ok()?;
            flushed.await.ok()
        })
        .await;
        let complete = matches!(waited, Ok(Some(())));
        if !complete {
            // The marker is among them (when it got in).
            let waiting = self.queue.max_capacity() - self.queue.capacity();
            tracing::warn!(
                waiting,
                "Redis did not take the queued events in time; other instances miss them"
            );
        }
        complete
    }
}

async fn publish_queued(
    client: redis::Client,
    channel: String,
    origin: u64,
    mut queued: mpsc::Receiver<Queued>,
    dropped: Arc<Mutex<Dropped>>,
) {
    let mut connection = RedisPublisher {
        client,
        channel,
        manager: None,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    // An event stays in hand until it is published.
    let mut next = queued.recv().await;
    while let Some(item) = next.take() {
        let event = match item {
            Queued::Event(event) => event,
            Queued::Flush(done) => {
                // Everything before it is published: what did not fit is told now.
                announce_lost(&mut connection, origin, &dropped).await;
                let _ = done.send(());
                next = queued.recv().await;
                continue;
            }
        };
        let envelope = Envelope {
            origin,
            event: Some(&*event),
            lost: None,
        };
        match connection.publish(&envelope).await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("publishing to Redis again");
                }
                backoff = FIRST_BACKOFF;
                announce_lost(&mut connection, origin, &dropped).await;
                next = queued.recv().await;
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot publish to Redis; retrying with backoff");
                }
                connection.manager = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                next = Some(Queued::Event(event));
            }
        }
    }
}

/// Tells the other instances which channels lost events that did not fit the queue. Runs
/// after each event published: the queue has room again, and Redis is reachable.
async fn announce_lost(connection: &mut RedisPublisher, origin: u64, shared: &Mutex<Dropped>) {
    let dropped = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    if dropped.events == 0 {
        return;
    }
    tracing::warn!(
        lost = dropped.events,
        "events did not fit the Redis publishing queue and are lost to the other instances"
    );
    if dropped.channels.is_empty() {
        return; // typing notices only
    }
    let envelope = Envelope::<&ChannelEvent> {
        origin,
        event: None,
        lost: Some(dropped.channels),
    };
    if connection.publish(&envelope).await.is_err() {
        // Told with the next event published.
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.events += dropped.events;
        shared.channels.merge(envelope.lost.unwrap_or_default());
    }
}

/// The publishing connection, made when first needed and again after a failure.
struct RedisPublisher {
    client: redis::Client,
    channel: String,
    manager: Option<ConnectionManager>,
}

impl RedisPublisher {
    async fn publish<E: Serialize>(&mut self, envelope: &Envelope<E>) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(envelope).expect("events serialize");
        let manager = match &mut self.manager {
            Some(manager) => manager,
            None => self.manager.insert(
                tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new(self.client.clone()))
                    .await??,
            ),
        };
        let _: i64 = tokio::time::timeout(CONNECT_TIMEOUT, manager.publish(&self.channel, payload))
            .await??;
        Ok(())
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
                        Ok(Envelope {
                            event: Some(event), ..
                        }) => hub.dispatch(Arc::new(event)).await,
                        Ok(Envelope {
                            lost: Some(lost), ..
                        }) => resync_lost(&hub, lost).await,
                        Ok(_) => {}
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

/// Another instance could not publish some events: close the affected connections here.
async fn resync_lost(hub: &Hub, lost: Lost) {
    tracing::warn!(
        all = lost.all,
        channels = lost.channels.len(),
        "another instance lost events on their way to Redis"
    );
    if lost.all {
        hub.resync_all().await;
    } else {
        hub.resync_channels(lost.channels.into_iter().collect())
            .await;
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> anyhow::Result<redis::aio::PubSub> {
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_their_wire_form_and_notices_name_channels() {
        let event = ChannelEvent {
            channel_id: 3,
            seq: Some(9),
            event: super::super::Event::FileDeleted {
                id: 1,
                message_id: 2,
                reason: Default::default(),
            },
        };
        let wire = serde_json::to_value(Envelope {
            origin: 5,
            event: Some(&event),
            lost: None,
        })
        .unwrap();
        // As instances of the previous version publish and read it.
        assert_eq!(
            wire.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["event", "origin"]
        );
        let mut lost = Lost::default();
        lost.add(3);
        let notice: Envelope<ChannelEvent> = serde_json::from_value(
            serde_json::to_value(Envelope::<&ChannelEvent> {
                origin: 5,
                event: None,
                lost: Some(lost),
            })
            .unwrap(),
        )
        .unwrap();
        assert!(notice.event.is_none());
        assert_eq!(notice.lost.unwrap().channels, HashSet::from([3]));
    }

    #[test]
    fn too_many_lost_channels_become_all() {
        let mut lost = Lost::default();
        (0..MAX_LOST_CHANNELS as i32).for_each(|id| lost.add(id));
        assert!(!lost.all);
        lost.add(-1);
        assert!(lost.all && lost.channels.is_empty());
        let mut other = Lost::default();
        other.add(1);
        other.merge(lost);
        assert!(other.all && !other.is_empty());
    }
}
