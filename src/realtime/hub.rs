//! The hub: which connection follows which channel, and the fan-out of events to them.
//!
//! One task owns all the state and takes commands from a bounded queue (the shape of actix's
//! "chat-actorless" example); `Hub` is the cloneable handle. The hub never waits on a socket:
//! each connection has a bounded queue of rendered frames, and a connection whose queue is
//! full is dropped from the hub and told to close with 4008, so one slow client never slows
//! the others.
//!
//! Ordering: numbered events of a channel are delivered in number order (commit order). An
//! event that arrives early waits for the ones before it, for at most `GAP_WAIT` (its
//! predecessor's publisher may have died after committing); numbers already passed are
//! dropped, which also removes duplicates.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::outbox::{Doorbell, Outbox, Refused, Wakes, text_frame};
use super::socket::SocketHandle;
use super::{ChannelEvent, Event, Viewer};
use crate::links::DownloadLinks;

/// How long an early event waits for a missing predecessor.
const GAP_WAIT: Duration = Duration::from_secs(1);
const COMMAND_QUEUE: usize = 65_536;
const TAP_CAPACITY: usize = 8192;

pub const CLOSE_TOO_SLOW: u16 = 4008;

#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Frames a connection may have waiting before it counts as too slow.
    pub queue_capacity: usize,
    pub max_connections_per_user: usize,
}

/// Counters, readable while the hub runs.
#[derive(Debug, Default)]
pub struct HubStats {
    pub connections: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub frames_queued: AtomicU64,
}

/// A connection as the session sees it.
pub struct Connection {
    pub id: u64,
    /// Fires with a close code when the hub drops the connection.
    pub kicked: oneshot::Receiver<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("too many connections for this user")]
    TooManyConnections,
    #[error("the hub has stopped")]
    Stopped,
}

enum Command {
    Connect {
        user_id: i32,
        /// Channels to follow, each with the last event number the session has seen.
        subscriptions: Vec<(i32, i64)>,
        base_url: Arc<str>,
        outbox: Arc<Outbox>,
        reply: oneshot::Sender<Result<Connection, ConnectError>>,
    },
    Disconnect {
        connection_id: u64,
    },
    IsSubscribed {
        connection_id: u64,
        channel_id: i32,
        reply: oneshot::Sender<bool>,
    },
    Event(Arc<ChannelEvent>),
    /// Answered once every command sent before it has been handled.
    Sync(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Hub {
    commands: mpsc::Sender<Command>,
    tap: broadcast::Sender<Arc<ChannelEvent>>,
    stats: Arc<HubStats>,
    config: HubConfig,
}

impl Hub {
    /// Starts the hub's task on the current runtime.
    pub fn start(links: DownloadLinks, config: HubConfig) -> Hub {
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let tap = broadcast::channel(TAP_CAPACITY).0;
        let stats = Arc::new(HubStats::default());
        let state = State {
            config,
            links,
            tap: tap.clone(),
            stats: stats.clone(),
            next_connection_id: 1,
            connections: HashMap::new(),
            channels: HashMap::new(),
            users: HashMap::new(),
            waiting: HashSet::new(),
        };
        tokio::spawn(state.run(receiver));
        Hub {
            commands,
            tap,
            stats,
            config,
        }
    }

    /// A new connection's outbox, sized to the configured queue. Call on the actix worker
    /// that serves the connection.
    pub fn new_outbox(&self, socket: Option<SocketHandle>) -> Arc<Outbox> {
        Outbox::new(
            self.config.queue_capacity,
            Some(Doorbell::current()),
            socket,
        )
    }

    /// Registers a connection; the hub pushes its channels' events into `outbox`.
    pub async fn connect(
        &self,
        user_id: i32,
        subscriptions: Vec<(i32, i64)>,
        base_url: Arc<str>,
        outbox: Arc<Outbox>,
    ) -> Result<Connection, ConnectError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Connect {
                user_id,
                subscriptions,
                base_url,
                outbox,
                reply,
            })
            .await
            .map_err(|_| ConnectError::Stopped)?;
        answer.await.map_err(|_| ConnectError::Stopped)?
    }

    pub async fn disconnect(&self, connection_id: u64) {
        let _ = self
            .commands
            .send(Command::Disconnect { connection_id })
            .await;
    }

    pub async fn is_subscribed(&self, connection_id: u64, channel_id: i32) -> bool {
        let (reply, answer) = oneshot::channel();
        let asked = self
            .commands
            .send(Command::IsSubscribed {
                connection_id,
                channel_id,
                reply,
            })
            .await;
        asked.is_ok() && answer.await.unwrap_or(false)
    }

    /// Hands an event to this instance's connections.
    pub async fn dispatch(&self, event: Arc<ChannelEvent>) {
        let _ = self.commands.send(Command::Event(event)).await;
    }

    /// Returns once the hub has handled everything sent to it before.
    pub async fn sync(&self) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Sync(reply)).await.is_ok() {
            let _ = answer.await;
        }
    }

    pub fn tap(&self) -> broadcast::Receiver<Arc<ChannelEvent>> {
        self.tap.subscribe()
    }

    pub fn stats(&self) -> &HubStats {
        &self.stats
    }
}

struct ConnectionEntry {
    user_id: i32,
    base_url: Arc<str>,
    outbox: Arc<Outbox>,
    kick: Option<oneshot::Sender<u16>>,
    channels: HashSet<i32>,
}

#[derive(Default)]
struct ChannelState {
    subscribers: HashSet<u64>,
    /// The next number to deliver.
    next_seq: i64,
    pending: BTreeMap<i64, Arc<ChannelEvent>>,
    waiting_since: Option<Instant>,
}

struct State {
    config: HubConfig,
    links: DownloadLinks,
    tap: broadcast::Sender<Arc<ChannelEvent>>,
    stats: Arc<HubStats>,
    next_connection_id: u64,
    connections: HashMap<u64, ConnectionEntry>,
    channels: HashMap<i32, ChannelState>,
    users: HashMap<i32, HashSet<u64>>,
    /// Channels with events waiting for a predecessor.
    waiting: HashSet<i32>,
}

impl State {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => return,
                },
                _ = ticker.tick(), if !self.waiting.is_empty() => self.release_stale(),
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Connect {
                user_id,
                subscriptions,
                base_url,
                outbox,
                reply,
            } => {
                let _ = reply.send(self.connect(user_id, subscriptions, base_url, outbox));
            }
            Command::Disconnect { connection_id } => self.remove(connection_id),
            Command::IsSubscribed {
                connection_id,
                channel_id,
                reply,
            } => {
                let subscribed = self
                    .connections
                    .get(&connection_id)
                    .is_some_and(|c| c.channels.contains(&channel_id));
                let _ = reply.send(subscribed);
            }
            Command::Event(event) => self.receive(event),
            Command::Sync(reply) => {
                let _ = reply.send(());
            }
        }
    }

    fn connect(
        &mut self,
        user_id: i32,
        subscriptions: Vec<(i32, i64)>,
        base_url: Arc<str>,
        outbox: Arc<Outbox>,
    ) -> Result<Connection, ConnectError> {
        let existing = self.users.get(&user_id).map_or(0, HashSet::len);
        if existing >= self.config.max_connections_per_user {
            return Err(ConnectError::TooManyConnections);
        }
        let id = self.next_connection_id;
        self.next_connection_id += 1;
        let (kick, kicked) = oneshot::channel();
        let mut channels = HashSet::new();
        for (channel_id, last_seq) in subscriptions {
            let channel = self.channels.entry(channel_id).or_default();
            channel.subscribers.insert(id);
            // A channel this instance already follows keeps its place in the sequence.
            if channel.subscribers.len() == 1 && channel.pending.is_empty() {
                channel.next_seq = last_seq + 1;
            }
            channels.insert(channel_id);
        }
        self.connections.insert(
            id,
            ConnectionEntry {
                user_id,
                base_url,
                outbox,
                kick: Some(kick),
                channels,
            },
        );
        self.users.entry(user_id).or_default().insert(id);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Connection { id, kicked })
    }

    fn remove(&mut self, connection_id: u64) {
        let Some(connection) = self.connections.remove(&connection_id) else {
            return;
        };
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        for channel_id in &connection.channels {
            self.unsubscribe_channel(*channel_id, connection_id);
        }
        if let Some(ids) = self.users.get_mut(&connection.user_id) {
            ids.remove(&connection_id);
            if ids.is_empty() {
                self.users.remove(&connection.user_id);
            }
        }
    }

    fn unsubscribe_channel(&mut self, channel_id: i32, connection_id: u64) {
        if let Some(channel) = self.channels.get_mut(&channel_id) {
            channel.subscribers.remove(&connection_id);
            if channel.subscribers.is_empty() && channel.pending.is_empty() {
                self.channels.remove(&channel_id);
            }
        }
    }

    /// Takes an event in, and delivers whatever is now in order.
    fn receive(&mut self, event: Arc<ChannelEvent>) {
        let Some(seq) = event.seq else {
            self.deliver(&event);
            return;
        };
        let channel_id = event.channel_id;
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            // Nobody here follows the channel: nothing to put in order. A join may start
            // following it, from the next number on.
            self.deliver(&event);
            if let Some(channel) = self.channels.get_mut(&channel_id) {
                channel.next_seq = seq + 1;
            }
            return;
        };
        if seq < channel.next_seq {
            return; // already delivered, or a duplicate
        }
        channel.pending.insert(seq, event);
        channel.waiting_since.get_or_insert_with(Instant::now);
        self.drain(channel_id);
    }

    /// Delivers the channel's pending events that are next in line.
    fn drain(&mut self, channel_id: i32) {
        loop {
            let Some(channel) = self.channels.get_mut(&channel_id) else {
                return;
            };
            let Some(event) = channel.pending.remove(&channel.next_seq) else {
                if channel.pending.is_empty() {
                    channel.waiting_since = None;
                    self.waiting.remove(&channel_id);
                    if channel.subscribers.is_empty() {
                        self.channels.remove(&channel_id);
                    }
                } else {
                    self.waiting.insert(channel_id);
                }
                return;
            };
            channel.next_seq += 1;
            channel.waiting_since = Some(Instant::now());
            self.deliver(&event);
        }
    }

    /// Gives up waiting for missing predecessors.
    fn release_stale(&mut self) {
        let now = Instant::now();
        let waiting: Vec<i32> = self.waiting.iter().copied().collect();
        for channel_id in waiting {
            let Some(channel) = self.channels.get_mut(&channel_id) else {
                self.waiting.remove(&channel_id);
                continue;
            };
            let stale = channel
                .waiting_since
                .is_some_and(|since| now - since >= GAP_WAIT);
            if let (true, Some((&first, _))) = (stale, channel.pending.first_key_value()) {
                tracing::warn!(
                    channel_id,
                    missing_from = channel.next_seq,
                    resuming_at = first,
                    "events never arrived; skipping ahead"
                );
                channel.next_seq = first;
                self.drain(channel_id);
            }
        }
    }

    fn deliver(&mut self, event: &Arc<ChannelEvent>) {
        let channel_id = event.channel_id;
        if let Event::MemberJoined { user } = &event.event {
            self.follow(user.id, channel_id);
        }
        let _ = self.tap.send(event.clone());
        if let Some(channel) = self.channels.get(&channel_id) {
            let shared = (!event.event.is_personal()).then(|| self.render(event, 0, ""));
            let mut too_slow = Vec::new();
            let mut gone = Vec::new();
            let mut wakes = Wakes::default();
            for id in &channel.subscribers {
                let Some(connection) = self.connections.get(id) else {
                    continue;
                };
                let frame = match &shared {
                    Some(frame) => frame.clone(),
                    None => self.render(event, connection.user_id, &connection.base_url),
                };
                match connection.outbox.push_deferred(frame, &mut wakes) {
                    Ok(()) => {
                        self.stats.frames_queued.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Refused::Full) => too_slow.push(*id),
                    // Closing already; its session disconnects it.
                    Err(Refused::Closed) => gone.push(*id),
                }
            }
            wakes.ring();
            for id in too_slow {
                self.kick(id, CLOSE_TOO_SLOW);
            }
            for id in gone {
                self.remove(id);
            }
        }
        if let Event::MemberLeft { user } = &event.event {
            self.unfollow(user.id, channel_id);
        }
    }

    /// The event as `user_id` sees it, as an encoded WebSocket frame.
    fn render(&self, event: &ChannelEvent, user_id: i32, base_url: &str) -> Bytes {
        let viewer = Viewer {
            user_id,
            base_url,
            links: &self.links,
        };
        text_frame(&event.render(&viewer).to_string())
    }

    fn connections_of(&self, user_id: i32) -> Vec<u64> {
        self.users
            .get(&user_id)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Subscribes a user's open connections to a channel they joined.
    fn follow(&mut self, user_id: i32, channel_id: i32) {
        let ids = self.connections_of(user_id);
        for id in ids {
            if let Some(connection) = self.connections.get_mut(&id) {
                connection.channels.insert(channel_id);
                self.channels
                    .entry(channel_id)
                    .or_default()
                    .subscribers
                    .insert(id);
            }
        }
    }

    /// Stops a user's connections following a channel they left, at once.
    fn unfollow(&mut self, user_id: i32, channel_id: i32) {
        let ids = self.connections_of(user_id);
        for id in ids {
            if let Some(connection) = self.connections.get_mut(&id) {
                connection.channels.remove(&channel_id);
            }
            self.unsubscribe_channel(channel_id, id);
        }
    }

    /// Drops a connection from the hub and tells its session to close with `code`.
    fn kick(&mut self, connection_id: u64, code: u16) {
        if let Some(connection) = self.connections.get_mut(&connection_id)
            && let Some(kick) = connection.kick.take()
        {
            let _ = kick.send(code);
        }
        if code == CLOSE_TOO_SLOW {
            self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(connection_id, "closing a connection that cannot keep up");
        }
        self.remove(connection_id);
    }
}
