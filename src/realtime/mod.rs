//! Channel events, published after the database commit.
//!
//! Today an in-process broadcast bus; the WebSocket hub and the Redis bridge subscribe to
//! it. Publishing never waits on a subscriber: the bus is bounded and a lagging subscriber
//! loses events (and learns it did), instead of slowing the publisher.
//!
//! Events carry rows, not rendered JSON: file links are issued to each recipient, so an
//! event is rendered per viewer (`ChannelEvent::render`).

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::db::models::{FileUpload, MessageRow, User};
use crate::links::DownloadLinks;

/// Room for events not yet taken by the slowest subscriber.
const BUS_CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
pub enum Event {
    MessageCreated {
        message: MessageRow,
        username: String,
        files: Vec<FileUpload>,
        client_id: Option<String>,
    },
    FileUploadComplete(FileUpload),
    FileDeleted {
        id: i32,
        message_id: i32,
    },
    MemberJoined(User),
    MemberLeft(User),
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::MessageCreated { .. } => "message_created",
            Event::FileUploadComplete(_) => "file_upload_complete",
            Event::FileDeleted { .. } => "file_deleted",
            Event::MemberJoined(_) => "member_joined",
            Event::MemberLeft(_) => "member_left",
        }
    }
}

/// An event in a channel, as delivered to that channel's subscribers.
#[derive(Debug, Clone)]
pub struct ChannelEvent {
    pub channel_id: i32,
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
            Event::MessageCreated {
                message,
                username,
                files,
                client_id,
            } => {
                let mut view = viewer.links.message_view(
                    viewer.base_url,
                    viewer.user_id,
                    (message.clone(), username.clone(), files.clone()),
                );
                view.client_id = client_id.clone();
                json!(view)
            }
            Event::FileUploadComplete(file) => {
                json!(
                    viewer
                        .links
                        .file_view(viewer.base_url, viewer.user_id, file)
                )
            }
            Event::FileDeleted { id, message_id } => {
                json!({ "id": id, "message_id": message_id, "channel_id": self.channel_id })
            }
            Event::MemberJoined(user) | Event::MemberLeft(user) => {
                json!({ "channel_id": self.channel_id, "user": user })
            }
        };
        json!({ "type": self.event.kind(), "channel_id": self.channel_id, "data": data })
    }
}

/// A cloneable handle for publishing and subscribing.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<ChannelEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(BUS_CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Call only after the change the event describes has committed.
    pub fn publish(&self, channel_id: i32, event: Event) {
        // No subscribers is not an error: nobody is listening right now.
        let _ = self
            .sender
            .send(Arc::new(ChannelEvent { channel_id, event }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChannelEvent>> {
        self.sender.subscribe()
    }
}
