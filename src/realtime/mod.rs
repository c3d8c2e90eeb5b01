//! Real time: channel events, the hub that fans them out to WebSocket connections, the
//! per-connection session, and the Redis bridge between instances.
//!
//! The path of an event: a handler commits a change, taking the channel's next event
//! number(s) in the same transaction (`db::allocate_event_seq`), then publishes the event
//! (`AppState::write_and_announce`, `EventBus::publish`). It goes straight to this instance's
//! hub and, with Redis, to the other instances' (`redis_bridge`). Each hub puts each
//! channel's events back into sequence order (commit order) before delivering them.
//!
//! Events carry rows, not rendered JSON: file links are issued to each recipient, so an
//! event is rendered per viewer (`ChannelEvent::render`).

pub mod hub;
pub mod outbox;
pub mod protocol;
pub mod redis_bridge;
pub mod session;
pub mod socket;
pub mod upgrade;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::db::models::{FileUpload, MessageParts, User};
use crate::links::DownloadLinks;
pub use hub::Hub;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    MessageCreated {
        message: MessageParts,
        client_id: Option<String>,
    },
    /// An edit, or a thread root's new reply count.
    MessageUpdated {
        message: MessageParts,
    },
    MessageDeleted {
        id: i32,
        thread_id: Option<i32>,
    },
    ReactionAdded(ReactionChange),
    ReactionRemoved(ReactionChange),
    FileUploadComplete {
        file: FileUpload,
    },
    /// A file's previews are ready (width, height, thumbnail, placeholder).
    FileUpdated {
        file: FileUpload,
    },
    FileDeleted {
        id: i32,
        message_id: i32,
        /// Absent in events of older instances (a rolling upgrade): a user's delete.
        #[serde(default)]
        reason: DeletionReason,
    },
    MemberJoined {
        user: User,
    },
    MemberLeft {
        user: User,
    },
    /// Ephemeral: not stored, not numbered.
    Typing {
        user_id: i32,
    },
    /// The user's read position in the channel moved. Ephemeral (the position itself is
    /// stored); delivered to that user's connections only, whatever they follow.
    ReadUpdated {
        user_id: i32,
        last_read_id: i32,
    },
    /// A member changed their profile (display name). Ephemeral: sent once in each channel
    /// of theirs, so a client sharing several channels with them hears it once per channel.
    UserUpdated {
        user: User,
    },
    /// The user hid this direct message from their sidebar. Ephemeral; delivered to that
    /// user's connections only, so every tab hides it.
    DmHidden {
        user_id: i32,
    },
}

/// A reaction added or removed: by whom, on what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReactionChange {
    pub message_id: i32,
    pub emoji: String,
    pub user_id: i32,
    pub display_name: String,
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::MessageCreated { .. } => "message_created",
            Event::MessageUpdated { .. } => "message_updated",
            Event::MessageDeleted { .. } => "message_deleted",
            Event::ReactionAdded(_) => "reaction_added",
            Event::ReactionRemoved(_) => "reaction_removed",
            Event::FileUploadComplete { .. } => "file_upload_complete",
            Event::FileUpdated { .. } => "file_updated",
            Event::FileDeleted { .. } => "file_deleted",
            Event::MemberJoined { .. } => "member_joined",
            Event::MemberLeft { .. } => "member_left",
            Event::Typing { .. } => "typing",
            Event::ReadUpdated { .. } => "read_updated",
            Event::UserUpdated { .. } => "user_updated",
            Event::DmHidden { .. } => "dm_hidden",
        }
    }

    /// Whether the rendered form differs per viewer (it carries download links).
    pub fn is_personal(&self) -> bool {
        match self {
            Event::MessageCreated { message, .. } | Event::MessageUpdated { message } => {
                !message.files.is_empty()
            }
            Event::FileUploadComplete { .. } | Event::FileUpdated { .. } => true,
            _ => false,
        }
    }
}

/// Why a file went: `data.reason` of `file_deleted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionReason {
    /// Its uploader deleted it.
    #[default]
    User,
    /// Older than its channel's or the deployment's retention.
    Retention,
    /// Its message was deleted (by the message's author).
    MessageDeleted,
}

/// An event in a channel. `seq` is the channel's event number (commit order); ephemeral
/// events have none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelEvent {
    pub channel_id: i32,
    pub seq: Option<i64>,
    pub event: Event,
}

/// Who an event is rendered for: links in it are issued to this user at this address.
pub struct Viewer<'a> {
    pub user_id: i32,
    pub base_url: &'a str,
    pub links: &'a DownloadLinks,
}

impl ChannelEvent {
    /// The wire form: `{"type", "channel_id", "data"}`.
    pub fn render(&self, viewer: &Viewer<'_>) -> Value {
        let data = match &self.event {
            Event::MessageCreated { message, client_id } => {
                let mut view =
                    viewer
                        .links
                        .message_view(viewer.base_url, viewer.user_id, message.clone());
                view.client_id = client_id.clone();
                json!(view)
            }
            Event::MessageUpdated { message } => json!(viewer.links.message_view(
                viewer.base_url,
                viewer.user_id,
                message.clone()
            )),
            Event::MessageDeleted { id, thread_id } => {
                json!({ "id": id, "channel_id": self.channel_id, "thread_id": thread_id })
            }
            Event::ReactionAdded(change) | Event::ReactionRemoved(change) => json!({
                "message_id": change.message_id,
                "channel_id": self.channel_id,
                "emoji": change.emoji,
                "user_id": change.user_id,
                "display_name": change.display_name,
            }),
            Event::FileUploadComplete { file } | Event::FileUpdated { file } => {
                json!(
                    viewer
                        .links
                        .file_view(viewer.base_url, viewer.user_id, file)
                )
            }
            Event::FileDeleted {
                id,
                message_id,
                reason,
            } => {
                json!({
                    "id": id,
                    "message_id": message_id,
                    "channel_id": self.channel_id,
                    "reason": reason,
                })
            }
            Event::MemberJoined { user }
            | Event::MemberLeft { user }
            | Event::UserUpdated { user } => {
                json!({ "channel_id": self.channel_id, "user": user })
            }
            Event::Typing { user_id } => {
                json!({ "channel_id": self.channel_id, "user_id": user_id })
            }
            Event::ReadUpdated { last_read_id, .. } => {
                json!({ "channel_id": self.channel_id, "last_read_id": last_read_id })
            }
            Event::DmHidden { .. } => json!({ "channel_id": self.channel_id }),
        };
        json!({ "type": self.event.kind(), "channel_id": self.channel_id, "data": data })
    }
}

/// Where handlers publish committed events: Redis when configured, else this instance's
/// hub. Cloneable.
#[derive(Clone)]
pub struct EventBus {
    hub: Hub,
    redis: Option<redis_bridge::Publisher>,
}

impl EventBus {
    pub fn new(hub: Hub, redis: Option<redis_bridge::Publisher>) -> Self {
        EventBus { hub, redis }
    }

    /// Publishes an event numbered `seq` by its commit. Call only after the commit.
    pub async fn publish(&self, channel_id: i32, seq: i64, event: Event) {
        self.send(ChannelEvent {
            channel_id,
            seq: Some(seq),
            event,
        })
        .await;
    }

    /// Publishes several events numbered from `first_seq` on, in that order.
    pub async fn publish_all(&self, channel_id: i32, first_seq: i64, events: Vec<Event>) {
        for (seq, event) in (first_seq..).zip(events) {
            self.publish(channel_id, seq, event).await;
        }
    }

    /// An ephemeral event (typing, read position): not numbered, never waits for order.
    pub async fn publish_ephemeral(&self, channel_id: i32, event: Event) {
        self.send(ChannelEvent {
            channel_id,
            seq: None,
            event,
        })
        .await;
    }

    /// Delivers to this instance's connections, and through Redis (if configured) to the
    /// other instances'.
    async fn send(&self, event: ChannelEvent) {
        let event = Arc::new(event);
        if let Some(redis) = &self.redis {
            redis.publish(event.clone());
        }
        self.hub.dispatch(event).await;
    }

    /// A copy of every event this instance delivers, in delivery order (for observers and
    /// tests). Bounded: a subscriber that falls behind loses the oldest.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<ChannelEvent>> {
        self.hub.tap()
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Waits until the events queued for Redis have been published, for at most
    /// `timeout`; whether they were (true without Redis).
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        match &self.redis {
            Some(redis) => redis.flush(timeout).await,
            None => true,
        }
    }
}
