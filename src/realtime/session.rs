//! One WebSocket connection: authenticate, follow the user's channels through the hub, and
//! act on the client's frames. Frames to the client go through the connection's `Outbox`,
//! which the hub fills directly; this task never sits between an event and its socket.
//!
//! Runs on the actix worker that accepted the connection, inside its upgrade service
//! (`realtime::upgrade`), on the socket it owns.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::web::Data;

use super::hub::{
    CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, Connection, SHUTTING_DOWN, TOO_SLOW, TYPING_EVERY,
};
use super::outbox::{Flushed, Outbox, Refused};
use super::protocol::{self, ClientFrame, FrameError};
use super::socket::{ClientMessage, FrameReader, ProtocolClose};
use super::{Event, hub::ConnectError};
use crate::auth::AuthUser;
use crate::chat::{self, post_message, validate_content};
use crate::db::{self, models::MessageParts};
use crate::error::{AppError, ErrorCode};
use crate::idempotency::{self, Answer, Fingerprint, Outcome, Scope};
use crate::ratelimit::TokenBucket;
use crate::state::AppState;

/// The largest frame a client may send (a 4000-character message fits with room to spare).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection silent for this many heartbeats is closed as dead.
const SILENT_HEARTBEATS: u32 = 3;

pub const CLOSE_AUTH: u16 = 4001;
pub const CLOSE_TOO_MANY: u16 = 4029;

/// Lets go of the socket when the session ends, however it ends (the hub may hold the
/// outbox a little longer).
struct ReleaseOnDrop(Arc<Outbox>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Runs a connection to its end. `header_auth` is the result of an `Authorization` header,
/// if the upgrade request had one.
pub async fn run(
    state: Data<AppState>,
    outbox: Arc<Outbox>,
    mut stream: FrameReader,
    header_auth: Option<Result<AuthUser, AppError>>,
    base_url: String,
) {
    let _release = ReleaseOnDrop(outbox.clone());
    // Boxed, like `on_message`: this task lives as long as the connection, and the set-up's
    // futures would otherwise stay inlined in every idle connection's task.
    let base: Arc<str> = Arc::from(base_url.as_str());
    let opened = Box::pin(open(&state, &outbox, &mut stream, header_auth, base_url)).await;
    if let Some((user, connection)) = opened {
        let connection_id = connection.id;
        let ending = Live::new(&state, &outbox, user, connection_id, base)
            .run(&mut stream, connection)
            .await;
        Box::pin(state.events.hub().disconnect(connection_id)).await;
        if let Some((code, description)) = ending {
            close(&state, &outbox, code, description);
        }
    }
    // What is queued (a close frame, if any) goes out; a client that does not read it in
    // time is cut off.
    outbox.finish();
    let timeout = Duration::from_secs(state.settings.realtime.ws_close_timeout_seconds);
    match Box::pin(outbox.flush(timeout)).await {
        Flushed::Yes => Box::pin(stream.linger(timeout)).await,
        Flushed::TimedOut => {
            tracing::info!("closing the socket of a client that did not read its close frame");
            stream.reset_on_close();
        }
        Flushed::SocketFailed => stream.reset_on_close(),
    }
}

/// Authenticates, sends `ready` and registers with the hub; `None` when the connection
/// closes instead (the close frame is queued).
async fn open(
    state: &AppState,
    outbox: &Arc<Outbox>,
    stream: &mut FrameReader,
    header_auth: Option<Result<AuthUser, AppError>>,
    base_url: String,
) -> Option<(AuthUser, Connection)> {
    let user = match header_auth {
        Some(Ok(user)) => user,
        Some(Err(_)) => {
            close(state, outbox, CLOSE_AUTH, "invalid token");
            return None;
        }
        None => match first_frame_auth(state, outbox, stream).await {
            Ok(user) => user,
            Err((code, reason)) => {
                close(state, outbox, code, reason);
                return None;
            }
        },
    };
    let subscriptions = match state
        .db
        .run(move |conn| Ok(db::channels::subscriptions(conn, user.id)?))
        .await
    {
        Ok(subscriptions) => subscriptions,
        Err(e) => {
            tracing::warn!(error = ?e, "could not load subscriptions");
            close(state, outbox, 1011, "try again");
            return None;
        }
    };
    // The hub queues `ready`, then events.
    let connected = state
        .events
        .hub()
        .connect(user.id, subscriptions, Arc::from(base_url), outbox.clone())
        .await;
    match connected {
        Ok(connection) => Some((user, connection)),
        Err(ConnectError::TooManyConnections) => {
            close(state, outbox, CLOSE_TOO_MANY, "too many connections");
            None
        }
        Err(ConnectError::ShuttingDown) => {
            close(state, outbox, CLOSE_GOING_AWAY, SHUTTING_DOWN);
            None
        }
        Err(ConnectError::Stopped) => {
            close(state, outbox, 1011, "shutting down");
            None
        }
        Err(ConnectError::Gone) => None,
    }
}

/// The `error` frame for a refused edit, delete or reaction (success is its event);
/// server errors are not described.
fn refused(error: Option<AppError>, what: &str) -> Option<String> {
    use actix_web::ResponseError;
    let e = error?;
    let message = if e.status_code().is_server_error() {
        what.to_owned()
    } else {
        e.to_string()
    };
    Some(protocol::error(e.code(), &message, None))
}

/// Queues the close frame, and counts it by its code.
fn close(state: &AppState, outbox: &Outbox, code: u16, description: &str) {
    outbox.close_then(code, description, || state.metrics.websocket_closed(code));
}

/// Waits for `{"type":"auth","token":...}` as the first frame; otherwise the close to send.
async fn first_frame_auth(
    state: &AppState,
    outbox: &Outbox,
    stream: &mut FrameReader,
) -> Result<AuthUser, (u16, &'static str)> {
    const REQUIRED: (u16, &str) = (CLOSE_AUTH, "authentication required");
    let deadline = tokio::time::sleep(AUTH_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            _ = &mut deadline => return Err(REQUIRED),
            message = stream.next() => match message {
                None => return Err(REQUIRED),
                Some(Err(ProtocolClose(code, reason))) => return Err((code, reason)),
                Some(Ok(message)) => message,
            },
        };
        match message {
            ClientMessage::Text(text) => {
                return match protocol::parse(&text) {
                    Ok(ClientFrame::Auth { token }) => state
                        .tokens
                        .verify(&token)
                        .map_err(|_| (CLOSE_AUTH, "invalid token")),
                    _ => Err(REQUIRED),
                };
            }
            ClientMessage::Ping(bytes) => outbox.pong(&bytes).map_err(|_| REQUIRED)?,
            ClientMessage::Pong => {}
            ClientMessage::Close => return Err((1000, "bye")),
            ClientMessage::Binary => return Err(REQUIRED),
        }
    }
}

/// An authenticated connection's loop.
struct Live<'a> {
    state: &'a AppState,
    outbox: &'a Outbox,
    user: AuthUser,
    connection_id: u64,
    /// `scheme://host` the client used, for links in what this session renders itself.
    base_url: Arc<str>,
    frame_budget: TokenBucket,
    last_rate_error: Option<Instant>,
    last_typing: std::collections::HashMap<i32, Instant>,
}

/// How the loop ended: a close frame to send, or `None` when the socket is already gone.
type Ending = Option<(u16, &'static str)>;

enum Reply {
    Text(String),
    Pong(bytes::Bytes),
}

impl<'a> Live<'a> {
    /// How the loop ends when a frame could not be queued.
    fn unsent(&self, refused: Refused) -> Ending {
        match refused {
            // The client does not read what it is sent (counted like the hub's own kicks).
            Refused::Full => {
                let stats = self.state.events.hub().stats();
                stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                Some((CLOSE_TOO_SLOW, TOO_SLOW))
            }
            Refused::Closed => None,
        }
    }

    fn new(
        state: &'a AppState,
        outbox: &'a Outbox,
        user: AuthUser,
        connection_id: u64,
        base_url: Arc<str>,
    ) -> Self {
        Live {
            state,
            outbox,
            user,
            connection_id,
            base_url,
            // A flood of frames is refused (with an error frame now and then), not queued.
            frame_budget: TokenBucket::per_minute(1200),
            last_rate_error: None,
            last_typing: Default::default(),
        }
    }

    async fn run(&mut self, stream: &mut FrameReader, mut connection: Connection) -> Ending {
        use tokio::time::Instant as TokioInstant;
        // One timer for both pings and the token's expiry (an idle connection's task stays
        // small). A random first ping, so connections opened together do not ping together.
        let now_unix = chrono::Utc::now().timestamp();
        let expires_at = TokioInstant::now()
            + Duration::from_secs((self.user.expires_at - now_unix).max(0) as u64);
        let heartbeat = Duration::from_secs(self.state.settings.realtime.ws_heartbeat_seconds);
        let silence_limit = heartbeat * SILENT_HEARTBEATS;
        let mut next_ping = TokioInstant::now() + heartbeat.mul_f64(rand::random::<f64>());
        let timer = tokio::time::sleep_until(next_ping.min(expires_at));
        tokio::pin!(timer);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                kicked = &mut connection.kicked => {
                    return Some(kicked.unwrap_or((1011, "the hub has stopped")));
                }
                message = stream.next() => {
                    last_heard = Instant::now();
                    match message {
                        None => return None,
                        Some(Err(ProtocolClose(code, reason))) => return Some((code, reason)),
                        Some(Ok(ClientMessage::Close)) => return Some((1000, "bye")),
                        Some(Ok(message)) => {
                            let sent = match Box::pin(self.on_message(message)).await {
                                Some(Reply::Text(text)) => self.outbox.text(&text),
                                Some(Reply::Pong(bytes)) => self.outbox.pong(&bytes),
                                None => Ok(()),
                            };
                            if let Err(refused) = sent {
                                return self.unsent(refused);
                            }
                        }
                    }
                }
                () = self.outbox.backlog_writable() => {
                    if !self.outbox.write_backlog() {
                        return None;
                    }
                }
                _ = &mut timer => {
                    if TokioInstant::now() >= expires_at {
                        return Some((CLOSE_AUTH, "token expired"));
                    }
                    if last_heard.elapsed() >= silence_limit {
                        return Some((1001, "no answer to pings"));
                    }
                    if let Err(refused) = self.outbox.ping() {
                        return self.unsent(refused);
                    }
                    next_ping += heartbeat;
                    timer.as_mut().reset(next_ping.min(expires_at));
                }
            }
        }
    }

    /// Acts on one client message; returns a frame to answer with, if any.
    async fn on_message(&mut self, message: ClientMessage) -> Option<Reply> {
        let text = match message {
            ClientMessage::Text(text) => text,
            ClientMessage::Ping(bytes) => return Some(Reply::Pong(bytes)),
            ClientMessage::Pong | ClientMessage::Close => return None,
            ClientMessage::Binary => {
                return Some(Reply::Text(protocol::error(
                    ErrorCode::UnsupportedFrame,
                    "binary frames are not accepted",
                    None,
                )));
            }
        };
        self.on_text(&text).await.map(Reply::Text)
    }

    /// Acts on one text frame; returns a frame to answer with, if any.
    async fn on_text(&mut self, text: &str) -> Option<String> {
        if self.frame_budget.take(Instant::now()).is_err() {
            // Say so at most once a second; drop the rest silently.
            let say = self
                .last_rate_error
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if say {
                self.last_rate_error = Some(Instant::now());
                return Some(protocol::error(
                    ErrorCode::RateLimited,
                    "too many frames; slow down",
                    None,
                ));
            }
            return None;
        }
        match protocol::parse(text) {
            Err(FrameError { code, message }) => Some(protocol::error(code, &message, None)),
            Ok(ClientFrame::Ping) => Some(protocol::pong()),
            Ok(ClientFrame::Auth { .. }) => Some(protocol::error(
                ErrorCode::BadRequest,
                "already authenticated",
                None,
            )),
            Ok(ClientFrame::Typing { channel_id }) => {
                self.typing(channel_id).await;
                None
            }
            Ok(ClientFrame::Edit {
                channel_id,
                message_id,
                content,
            }) => {
                let edited =
                    chat::edit_message(self.state, self.user.id, channel_id, message_id, content)
                        .await;
                refused(edited.err(), "could not edit the message")
            }
            Ok(ClientFrame::Delete {
                channel_id,
                message_id,
            }) => {
                let deleted =
                    chat::delete_message(self.state, self.user.id, channel_id, message_id).await;
                refused(deleted.err(), "could not delete the message")
            }
            Ok(ClientFrame::React {
                channel_id,
                message_id,
                emoji,
                add,
            }) => {
                let reacted = if crate::emoji::is_emoji(&emoji) {
                    chat::react(self.state, self.user.id, channel_id, message_id, emoji, add).await
                } else {
                    Err(AppError::bad_request(
                        ErrorCode::BadRequest,
                        "a reaction is exactly one emoji",
                    ))
                };
                refused(reacted.err(), "could not react")
            }
            Ok(ClientFrame::Message {
                channel_id,
                content,
                client_id,
                thread_id,
            }) => {
                let posted = self
                    .post(channel_id, content, thread_id, client_id.clone())
                    .await;
                // Success is answered by the `message_created` event, which echoes client_id;
                // a repeat of a posted client_id by that event again, to this socket only.
                posted.unwrap_or_else(|e| {
                    use actix_web::ResponseError;
                    let message = if e.status_code().is_server_error() {
                        "could not post the message".into()
                    } else {
                        e.to_string()
                    };
                    Some(protocol::error(e.code(), &message, client_id.as_deref()))
                })
            }
        }
    }

    /// Posts a message; a `client_id` makes it idempotent, as an `Idempotency-Key` does a
    /// REST post (same table, its own namespace): the same user sending the same `client_id`
    /// again within the key's lifetime gets the first `message_created` again, marked
    /// `"replayed": true`, instead of a second message. Returns that replay, if it is one.
    ///
    /// The key table rather than a unique `(user_id, client_id)` column on messages: keys
    /// expire (clients reuse short ids such as counters across sessions, and a permanent
    /// constraint would swallow next week's "c1"), a repeat gets the first answer back rather
    /// than a conflict, in-flight repeats from another socket are told so, and the messages
    /// table stays as it is. The cost: a post with a `client_id` writes twice (claim, then the
    /// message with its answer).
    async fn post(
        &self,
        channel_id: i32,
        content: String,
        thread_id: Option<i32>,
        client_id: Option<String>,
    ) -> Result<Option<String>, AppError> {
        let (state, user_id) = (self.state, self.user.id);
        let Some(client_id) = client_id else {
            validate_content(&content, false)?;
            post_message(
                state,
                user_id,
                channel_id,
                content,
                thread_id,
                Vec::new(),
                None,
                None,
            )
            .await?;
            return Ok(None);
        };
        let mut fingerprint = Fingerprint::new("WS", "message")
            .part(channel_id.to_string().as_bytes())
            .part(content.as_bytes());
        if let Some(thread_id) = thread_id {
            fingerprint = fingerprint.part(format!("thread {thread_id}").as_bytes());
        }
        let key = client_id.clone();
        let claim =
            match idempotency::claim(&state.db, user_id, Scope::Socket, key, fingerprint).await? {
                Outcome::Replay { body, .. } => {
                    let data = serde_json::from_str(&body).unwrap_or_default();
                    return Ok(Some(protocol::replayed_message(channel_id, data)));
                }
                Outcome::Proceed(claim) => claim,
            };
        let answer = {
            let (links, base, client_id) = (
                state.links.clone(),
                self.base_url.clone(),
                client_id.clone(),
            );
            Answer::new(
                claim.completion(),
                actix_web::http::StatusCode::CREATED,
                move |parts: &MessageParts| {
                    let mut view = links.message_view(&base, user_id, parts.clone());
                    view.client_id = Some(client_id);
                    serde_json::json!(view)
                },
            )
        };
        let posted = async {
            validate_content(&content, false)?;
            let client_id = Some(client_id);
            post_message(
                state,
                user_id,
                channel_id,
                content,
                thread_id,
                Vec::new(),
                client_id,
                Some(answer),
            )
            .await
        }
        .await;
        match posted {
            Ok(_) => {
                claim.keep();
                Ok(None)
            }
            Err(e) => {
                claim.release().await;
                Err(e)
            }
        }
    }

    /// Ephemeral and rate limited; only for channels this connection follows. The hub limits
    /// notices per user and channel; checking here first spares it a round trip for each
    /// notice of a chatty socket.
    async fn typing(&mut self, channel_id: i32) {
        let now = Instant::now();
        if self
            .last_typing
            .get(&channel_id)
            .is_some_and(|t| now - *t < TYPING_EVERY)
        {
            return;
        }
        if !self
            .state
            .events
            .hub()
            .is_subscribed(self.connection_id, channel_id)
            .await
        {
            return;
        }
        self.last_typing.insert(channel_id, now);
        self.state
            .events
            .publish_ephemeral(
                channel_id,
                Event::Typing {
                    user_id: self.user.id,
                },
            )
            .await;
    }
}
