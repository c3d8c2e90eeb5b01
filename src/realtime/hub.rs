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
//! predecessor's publisher may have died after committing, or Redis lost it); numbers already
//! passed are dropped, which also removes duplicates. When the hub gives up on a missing
//! event, the channel's connections are closed with 4009: they missed something (perhaps a
//! member leaving), and reconnecting and fetching `?after=` is how a client catches up.
//!
//! Joining the stream: a session reads the user's channels (with each channel's event number)
//! from the database, then connects. Events that pass between the two would be lost to it, a
//! join or a leave of the user's own included, so the hub remembers the last number of every
//! channel and the user's membership changes for `RECENT_FOR`, and applies what the session's
//! snapshot is older than.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::outbox::{Outbox, Refused, WorkerBatches, text_frame};
use super::{ChannelEvent, Event, Viewer};
use crate::links::DownloadLinks;
use crate::metrics::Metrics;

/// How long an early event waits for a missing predecessor.
const GAP_WAIT: Duration = Duration::from_secs(2);
/// How long the hub remembers what passed, for sessions whose snapshot is older.
const RECENT_FOR: Duration = Duration::from_secs(60);
const COMMAND_QUEUE: usize = 65_536;
/// Typing notices of one user in one channel: at most one every this often, however many
/// sockets (or instances) they come from.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);
const TAP_CAPACITY: usize = 8192;

pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Events of a followed channel were lost: reconnect and catch up with `?after=`.
pub const CLOSE_RESYNC: u16 = 4009;
pub const TOO_SLOW: &str = "too slow: catch up with GET messages?after=";
/// Events for at most this many connections are written straight from the hub's thread;
/// beyond, the workers write them (one hand-off per worker instead of one syscall after
/// another on one thread).
const INLINE_FAN_OUT: usize = 32;
const RESYNC: &str = "events were missed: reconnect and catch up with GET messages?after=";
/// The instance is stopping: reconnect (to another instance) and catch up.
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const SHUTTING_DOWN: &str = "server shutting down: reconnect";

#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    pub max_connections_per_user: usize,
}

/// Counters, readable while the hub runs.
#[derive(Debug, Default)]
pub struct HubStats {
    pub connections: AtomicU64,
    pub slow_disconnects: AtomicU64,
    /// Connections closed because events they should have had were lost.
    pub resync_disconnects: AtomicU64,
    pub frames_queued: AtomicU64,
}

/// A connection as the session sees it.
pub struct Connection {
    pub id: u64,
    /// Fires with a close code and reason when the hub drops the connection.
    pub kicked: oneshot::Receiver<(u16, &'static str)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("too many connections for this user")]
    TooManyConnections,
    #[error("the hub has stopped")]
    Stopped,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the connection closed before it was registered")]
    Gone,
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
    /// Closes every connection with 4009: events may have been missed (Redis was away).
    ResyncAll,
    /// Closes these channels' connections with 4009: events of theirs were lost.
    ResyncChannels(Vec<i32>),
    /// Answered once every command sent before it has been handled.
    Sync(oneshot::Sender<()>),
    /// Closes every connection with 1001 and refuses new ones: the server is stopping.
    ShutDown,
}

#[derive(Clone)]
pub struct Hub {
    commands: mpsc::Sender<Command>,
    tap: broadcast::Sender<Arc<ChannelEvent>>,
    stats: Arc<HubStats>,
}

impl Hub {
    /// Starts the hub's task on the current runtime.
    pub fn start(links: DownloadLinks, config: HubConfig, metrics: Metrics) -> Hub {
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let tap = broadcast::channel(TAP_CAPACITY).0;
        let stats = Arc::new(HubStats::default());
        let state = State {
            config,
            links,
            tap: tap.clone(),
            stats: stats.clone(),
            metrics,
            shutting_down: false,
            next_connection_id: 1,
            connections: HashMap::new(),
            channels: HashMap::new(),
            users: HashMap::new(),
            waiting: HashSet::new(),
            recent: Recent::default(),
            typing: HashMap::new(),
        };
        tokio::spawn(state.run(receiver));
        Hub {
            commands,
            tap,
            stats,
        }
    }

    /// Registers a connection; the hub queues `ready` (with the channels it follows) and then
    /// its channels' events into `outbox`. `subscriptions` is the user's channels, each with
    /// its event number when read.
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

    /// Closes every connection with 4009, for clients to reconnect and catch up: this
    /// instance may have missed events (its Redis subscription was lost).
    pub async fn resync_all(&self) {
        let _ = self.commands.send(Command::ResyncAll).await;
    }

    /// Closes the connections following these channels with 4009: events of theirs were
    /// lost on the way here (another instance could not publish them).
    pub async fn resync_channels(&self, channel_ids: Vec<i32>) {
        let _ = self
            .commands
            .send(Command::ResyncChannels(channel_ids))
            .await;
    }

    /// Closes every connection with 1001 ("going away": reconnect elsewhere) and refuses
    /// connections from now on. Returns once the connections have been told.
    pub async fn shut_down(&self) {
        let _ = self.commands.send(Command::ShutDown).await;
        self.sync().await;
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
    kick: Option<oneshot::Sender<(u16, &'static str)>>,
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
    metrics: Metrics,
    /// `ShutDown` was received: connections are refused.
    shutting_down: bool,
    next_connection_id: u64,
    connections: HashMap<u64, ConnectionEntry>,
    channels: HashMap<i32, ChannelState>,
    users: HashMap<i32, HashSet<u64>>,
    /// Channels with events waiting for a predecessor.
    waiting: HashSet<i32>,
    recent: Recent,
    /// When each (channel, user) last had a typing notice relayed.
    typing: HashMap<(i32, i32), Instant>,
}

/// What the hub delivered lately, for sessions whose snapshot of the user's channels is
/// older than the hub's view.
#[derive(Default)]
struct Recent {
    /// The last event number delivered in channels nobody here follows.
    seqs: HashMap<i32, (i64, Instant)>,
    /// Joins (true) and leaves (false), by user: (channel, event number, joined, when).
    memberships: HashMap<i32, Vec<(i32, i64, bool, Instant)>>,
}

impl Recent {
    /// Notes that the events of a channel nobody here follows have reached `seq`.
    fn passed(&mut self, channel_id: i32, seq: i64) {
        let now = Instant::now();
        let entry = self.seqs.entry(channel_id).or_insert((seq, now));
        *entry = (entry.0.max(seq), now);
    }

    fn forget_before(&mut self, horizon: Instant) {
        self.seqs.retain(|_, (_, at)| *at >= horizon);
        self.memberships.retain(|_, changes| {
            changes.retain(|change| change.3 >= horizon);
            !changes.is_empty()
        });
    }

    /// The user's latest membership change per channel since the snapshot: (channel,
    /// joined), for changes numbered after the channel's snapshot (or in channels the
    /// snapshot does not have, which it predates).
    fn changes_since(&self, user_id: i32, snapshot: &[(i32, i64)]) -> Vec<(i32, bool)> {
        let mut latest: BTreeMap<i32, (i64, bool)> = BTreeMap::new();
        for &(channel_id, seq, joined, _) in self.memberships.get(&user_id).into_iter().flatten() {
            let newer = snapshot
                .iter()
                .find(|(id, _)| *id == channel_id)
                .is_none_or(|(_, seen)| seq > *seen);
            if newer && latest.get(&channel_id).is_none_or(|(s, _)| seq > *s) {
                latest.insert(channel_id, (seq, joined));
            }
        }
        latest
            .into_iter()
            .map(|(c, (_, joined))| (c, joined))
            .collect()
    }
}

impl State {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut pruner = tokio::time::interval(RECENT_FOR / 4);
        pruner.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => return,
                },
                _ = ticker.tick(), if !self.waiting.is_empty() => self.release_stale(),
                _ = pruner.tick() => self.forget_old(),
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
            Command::ResyncAll => self.resync_all(),
            Command::ResyncChannels(channel_ids) => self.resync_channels(&channel_ids),
            Command::Sync(reply) => {
                let _ = reply.send(());
            }
            Command::ShutDown => self.shut_down(),
        }
    }

    fn connect(
        &mut self,
        user_id: i32,
        snapshot: Vec<(i32, i64)>,
        base_url: Arc<str>,
        outbox: Arc<Outbox>,
    ) -> Result<Connection, ConnectError> {
        if self.shutting_down {
            return Err(ConnectError::ShuttingDown);
        }
        let existing = self.users.get(&user_id).map_or(0, HashSet::len);
        if existing >= self.config.max_connections_per_user {
            return Err(ConnectError::TooManyConnections);
        }
        // The snapshot, corrected by the user's joins and leaves that passed since.
        let changes = self.recent.changes_since(user_id, &snapshot);
        let left = |channel_id: i32| changes.contains(&(channel_id, false));
        let mut follows: Vec<(i32, i64)> = snapshot
            .into_iter()
            .filter(|(channel_id, _)| !left(*channel_id))
            .collect();
        for &(channel_id, joined) in &changes {
            if joined && !follows.iter().any(|(id, _)| *id == channel_id) {
                follows.push((channel_id, 0));
            }
        }
        let id = self.next_connection_id;
        self.next_connection_id += 1;
        let channel_ids: Vec<i32> = follows.iter().map(|(id, _)| *id).collect();
        // Queued before any event can be: `ready` is always the first frame.
        if outbox
            .text(&super::protocol::ready(user_id, &channel_ids))
            .is_err()
        {
            return Err(ConnectError::Gone);
        }
        let (kick, kicked) = oneshot::channel();
        for (channel_id, snapshot_seq) in follows {
            let passed = self.recent.seqs.remove(&channel_id).map(|(seq, _)| seq);
            let channel = self.channels.entry(channel_id).or_default();
            channel.subscribers.insert(id);
            // A channel this instance already follows keeps its place in the sequence; a new
            // one starts after the last event that passed, or after the snapshot.
            if channel.subscribers.len() == 1 && channel.pending.is_empty() {
                channel.next_seq = snapshot_seq.max(passed.unwrap_or(0)) + 1;
            }
        }
        self.connections.insert(
            id,
            ConnectionEntry {
                user_id,
                base_url,
                outbox,
                kick: Some(kick),
                channels: channel_ids.into_iter().collect(),
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
                self.forget_channel(channel_id);
            }
        }
    }

    /// Drops a channel nobody follows any more, remembering where its sequence stands.
    fn forget_channel(&mut self, channel_id: i32) {
        if let Some(channel) = self.channels.remove(&channel_id) {
            self.recent.passed(channel_id, channel.next_seq - 1);
        }
    }

    fn forget_old(&mut self) {
        let now = Instant::now();
        self.recent.forget_before(now - RECENT_FOR);
        self.typing.retain(|_, at| now - *at < TYPING_EVERY);
    }

    /// Takes an event in, and delivers whatever is now in order.
    fn receive(&mut self, event: Arc<ChannelEvent>) {
        let Some(seq) = event.seq else {
            if self.admit_ephemeral(&event) {
                self.deliver(&event);
            }
            return;
        };
        let channel_id = event.channel_id;
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            // Nobody here follows the channel: nothing to put in order. A join may start
            // following it, from the next number on.
            self.deliver(&event);
            match self.channels.get_mut(&channel_id) {
                Some(channel) => channel.next_seq = seq + 1,
                None => self.recent.passed(channel_id, seq),
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

    /// Admits an ephemeral event or drops it: typing notices are limited per user and
    /// channel, and admitting one starts the user's next wait.
    fn admit_ephemeral(&mut self, event: &ChannelEvent) -> bool {
        let Event::Typing { user_id } = event.event else {
            return true;
        };
        let now = Instant::now();
        let key = (event.channel_id, user_id);
        if self
            .typing
            .get(&key)
            .is_some_and(|at| now - *at < TYPING_EVERY)
        {
            return false;
        }
        self.typing.insert(key, now);
        true
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
                        self.forget_channel(channel_id);
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
                    "events never arrived; skipping ahead and closing the channel's connections"
                );
                channel.next_seq = first;
                // They missed events (perhaps one that changes who may see the channel):
                // reconnecting re-reads their channels, `?after=` fills the gap.
                self.resync_followers(channel_id);
                self.drain(channel_id);
            }
        }
    }

    fn deliver(&mut self, event: &Arc<ChannelEvent>) {
        if let Event::ReadUpdated { user_id, .. } | Event::DmHidden { user_id } = event.event {
            let _ = self.tap.send(event.clone());
            self.deliver_to_user(event, user_id);
            return;
        }
        let channel_id = event.channel_id;
        if let (Some(seq), Event::MemberJoined { user } | Event::MemberLeft { user }) =
            (event.seq, &event.event)
        {
            let joined = matches!(event.event, Event::MemberJoined { .. });
            self.recent.memberships.entry(user.id).or_default().push((
                channel_id,
                seq,
                joined,
                Instant::now(),
            ));
        }
        if let Event::MemberJoined { user } = &event.event {
            self.follow(user.id, channel_id);
        }
        let _ = self.tap.send(event.clone());
        if let Some(channel) = self.channels.get(&channel_id) {
            let shared = (!event.event.is_personal()).then(|| self.render(event, 0, ""));
            // Nobody needs to be told they are typing.
            let typist = match event.event {
                Event::Typing { user_id } => Some(user_id),
                _ => None,
            };
            let mut too_slow = Vec::new();
            let mut gone = Vec::new();
            let mut delivered = 0;
            // Few recipients: written from here, no hand-off. Many: each worker thread
            // writes its share, in parallel (see `outbox`).
            let fan_out_to_workers = channel.subscribers.len() > INLINE_FAN_OUT;
            let mut batches = WorkerBatches::default();
            for id in &channel.subscribers {
                let Some(connection) = self.connections.get(id) else {
                    continue;
                };
                if typist == Some(connection.user_id) {
                    continue;
                }
                let frame = match &shared {
                    Some(frame) => frame.clone(),
                    None => self.render(event, connection.user_id, &connection.base_url),
                };
                let pushed = if fan_out_to_workers {
                    connection.outbox.push_deferred(frame, &mut batches)
                } else {
                    connection.outbox.push(frame)
                };
                match pushed {
                    Ok(()) => delivered += 1,
                    Err(Refused::Full) => too_slow.push(*id),
                    // Closing already; its session disconnects it.
                    Err(Refused::Closed) => gone.push(*id),
                }
            }
            batches.ring();
            self.stats
                .frames_queued
                .fetch_add(delivered, Ordering::Relaxed);
            self.metrics.events_delivered(delivered);
            for id in too_slow {
                self.kick(id, CLOSE_TOO_SLOW, TOO_SLOW);
            }
            for id in gone {
                self.remove(id);
            }
        }
        if let Event::MemberLeft { user } = &event.event {
            self.unfollow(user.id, channel_id);
        }
    }

    /// Delivers an event to one user's connections only (their read position): each one's
    /// bounded queue, as for channel events; a full one is closed with 4008.
    fn deliver_to_user(&mut self, event: &Arc<ChannelEvent>, user_id: i32) {
        let ids = self.connections_of(user_id);
        if ids.is_empty() {
            return;
        }
        let frame = self.render(event, user_id, "");
        let mut too_slow = Vec::new();
        let mut gone = Vec::new();
        let mut delivered = 0;
        for id in ids {
            let Some(connection) = self.connections.get(&id) else {
                continue;
            };
            match connection.outbox.push(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(Refused::Full) => too_slow.push(id),
                Err(Refused::Closed) => gone.push(id),
            }
        }
        self.stats
            .frames_queued
            .fetch_add(delivered, Ordering::Relaxed);
        self.metrics.events_delivered(delivered);
        for id in too_slow {
            self.kick(id, CLOSE_TOO_SLOW, TOO_SLOW);
        }
        for id in gone {
            self.remove(id);
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

    /// Closes every connection with 1001 and refuses new ones.
    fn shut_down(&mut self) {
        self.shutting_down = true;
        let all: Vec<u64> = self.connections.keys().copied().collect();
        tracing::info!(
            connections = all.len(),
            "closing WebSockets with 1001 for their clients to reconnect elsewhere"
        );
        for id in all {
            self.kick(id, CLOSE_GOING_AWAY, SHUTTING_DOWN);
        }
    }

    /// Closes every connection with 4009.
    fn resync_all(&mut self) {
        let all: Vec<u64> = self.connections.keys().copied().collect();
        if !all.is_empty() {
            tracing::warn!(
                connections = all.len(),
                "events may have been missed; closing connections to resync"
            );
        }
        for id in all {
            self.kick(id, CLOSE_RESYNC, RESYNC);
        }
    }

    /// Closes the connections following these channels with 4009, and forgets where the
    /// channels stand: the events lost would hold them up, and the next session to follow
    /// one reads its position from the database, which has them.
    fn resync_channels(&mut self, channel_ids: &[i32]) {
        for &channel_id in channel_ids {
            if !self.channels.contains_key(&channel_id) {
                continue;
            }
            let connections = self.resync_followers(channel_id);
            tracing::warn!(
                channel_id,
                connections,
                "events of this channel were lost; closed its connections to resync"
            );
            self.forget_channel(channel_id);
            self.waiting.remove(&channel_id);
        }
    }

    /// Closes the connections following a channel with 4009; returns how many.
    fn resync_followers(&mut self, channel_id: i32) -> usize {
        let followers: Vec<u64> = self
            .channels
            .get(&channel_id)
            .map(|channel| channel.subscribers.iter().copied().collect())
            .unwrap_or_default();
        for &id in &followers {
            self.kick(id, CLOSE_RESYNC, RESYNC);
        }
        followers.len()
    }

    /// Drops a connection from the hub and tells its session to close with `code`.
    fn kick(&mut self, connection_id: u64, code: u16, reason: &'static str) {
        if let Some(connection) = self.connections.get_mut(&connection_id)
            && let Some(kick) = connection.kick.take()
        {
            let _ = kick.send((code, reason));
        }
        match code {
            CLOSE_TOO_SLOW => {
                self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(connection_id, "closing a connection that cannot keep up");
            }
            CLOSE_RESYNC => {
                self.stats
                    .resync_disconnects
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.remove(connection_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::db::models::User;
    use actix_http::ws::{OpCode, Parser};
    use serde_json::Value;

    const USER: i32 = 7;

    fn start() -> Hub {
        let links = DownloadLinks::new(&Secret::new("test"), 60);
        Hub::start(
            links,
            HubConfig {
                max_connections_per_user: 4,
            },
            Metrics::new(),
        )
    }

    fn event(channel_id: i32, seq: i64, event: Event) -> Arc<ChannelEvent> {
        Arc::new(ChannelEvent {
            channel_id,
            seq: Some(seq),
            event,
        })
    }

    fn deleted(channel_id: i32, seq: i64) -> Arc<ChannelEvent> {
        event(
            channel_id,
            seq,
            Event::FileDeleted {
                id: seq as i32,
                message_id: 1,
                reason: Default::default(),
            },
        )
    }

    fn member(channel_id: i32, seq: i64, joined: bool) -> Arc<ChannelEvent> {
        let user = User {
            id: USER,
            username: "u".into(),
            display_name: "u".into(),
            created_at: chrono::DateTime::UNIX_EPOCH.naive_utc(),
        };
        let change = if joined {
            Event::MemberJoined { user }
        } else {
            Event::MemberLeft { user }
        };
        event(channel_id, seq, change)
    }

    /// Connects with `snapshot`; returns the connection and a reader of its frames.
    async fn connect(hub: &Hub, snapshot: Vec<(i32, i64)>) -> (Connection, Frames) {
        let outbox = Outbox::new(64, None, None);
        let connection = hub
            .connect(USER, snapshot, Arc::from("http://x"), outbox.clone())
            .await
            .unwrap();
        (connection, Frames(outbox, hub.clone()))
    }

    struct Frames(Arc<Outbox>, Hub);

    impl Frames {
        /// The frames queued so far, as JSON.
        async fn take(&mut self) -> Vec<Value> {
            // Everything dispatched so far has been delivered.
            self.1.sync().await;
            let mut queued = self.0.take_queued();
            let mut frames = Vec::new();
            while let Some((_, OpCode::Text, Some(payload))) =
                Parser::parse(&mut queued, false, 1 << 20).unwrap()
            {
                frames.push(serde_json::from_slice(&payload).unwrap());
            }
            frames
        }
    }

    fn kinds(frames: &[Value]) -> Vec<(String, i64)> {
        frames
            .iter()
            .map(|f| {
                let kind = f["type"].as_str().unwrap().to_owned();
                (kind, f["channel_id"].as_i64().unwrap_or(0))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_leave_that_passes_before_the_connection_registers_is_applied() {
        let hub = start();
        // The session read channels 1 and 2; the user leaves 1 before it connects.
        hub.dispatch(member(1, 5, false)).await;
        let (_connection, mut frames) = connect(&hub, vec![(1, 4), (2, 9)]).await;
        hub.dispatch(deleted(1, 6)).await;
        hub.dispatch(deleted(2, 10)).await;
        let frames = frames.take().await;
        assert_eq!(frames[0]["channel_ids"], serde_json::json!([2]));
        assert_eq!(
            kinds(&frames[1..]),
            [("file_deleted".to_owned(), 2)],
            "nothing from the channel the user left"
        );
    }

    #[tokio::test]
    async fn a_join_that_passes_before_the_connection_registers_is_followed() {
        let hub = start();
        hub.dispatch(member(5, 3, true)).await;
        let (_connection, mut frames) = connect(&hub, vec![]).await;
        hub.dispatch(deleted(5, 4)).await;
        let frames = frames.take().await;
        assert_eq!(frames[0]["channel_ids"], serde_json::json!([5]));
        assert_eq!(kinds(&frames[1..]), [("file_deleted".to_owned(), 5)]);
    }

    #[tokio::test]
    async fn a_snapshot_older_than_the_hub_does_not_wait_for_events_gone_by() {
        let hub = start();
        for seq in 1..=3 {
            hub.dispatch(deleted(1, seq)).await;
        }
        // Read at event 1; events 2 and 3 passed before the connection registered.
        let (mut connection, mut frames) = connect(&hub, vec![(1, 1)]).await;
        hub.dispatch(deleted(1, 4)).await;
        let frames = frames.take().await;
        assert_eq!(kinds(&frames[1..]), [("file_deleted".to_owned(), 1)]);
        assert_eq!(
            frames[1]["data"]["id"], 4,
            "delivered at once, not after a gap"
        );
        assert!(connection.kicked.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_lost_event_closes_the_channels_connections_with_4009() {
        let hub = start();
        let (connection, mut frames) = connect(&hub, vec![(1, 0)]).await;
        let (other, _) = connect(&hub, vec![(2, 0)]).await;
        hub.dispatch(deleted(1, 2)).await; // 1 never arrives
        let kicked = tokio::time::timeout(GAP_WAIT * 2, connection.kicked)
            .await
            .expect("closed once the gap is given up on")
            .unwrap();
        assert_eq!(kicked.0, CLOSE_RESYNC);
        assert_eq!(kinds(&frames.take().await[1..]), []);
        hub.sync().await;
        assert_eq!(hub.stats().resync_disconnects.load(Ordering::Relaxed), 1);
        drop(other);
    }

    #[tokio::test]
    async fn shutting_down_closes_every_connection_with_1001_and_refuses_new_ones() {
        let hub = start();
        let (first, _) = connect(&hub, vec![(1, 0)]).await;
        let (second, _) = connect(&hub, vec![]).await;
        hub.shut_down().await;
        for connection in [first, second] {
            let kicked = connection.kicked.await.expect("told to close");
            assert_eq!(kicked, (CLOSE_GOING_AWAY, SHUTTING_DOWN));
        }
        let late = hub
            .connect(
                USER,
                vec![],
                Arc::from("http://x"),
                Outbox::new(4, None, None),
            )
            .await;
        assert!(matches!(late, Err(ConnectError::ShuttingDown)));
    }

    #[tokio::test]
    async fn a_refused_connection_gets_no_ready() {
        let hub = start();
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(connect(&hub, vec![]).await);
        }
        let outbox = Outbox::new(4, None, None);
        let refused = hub
            .connect(USER, vec![], Arc::from("http://x"), outbox.clone())
            .await;
        assert!(matches!(refused, Err(ConnectError::TooManyConnections)));
        let mut frames = Frames(outbox, hub.clone());
        assert_eq!(frames.take().await, Vec::<Value>::new());
    }
}
