//! One WebSocket connection: authenticate, follow the user's channels through the hub,
//! write the hub's frames to the socket, and act on the client's frames.
//!
//! Runs on the actix worker that accepted the connection (actix-ws streams are `!Send`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session,
};
use futures_util::StreamExt;

use super::hub::Connection;
use super::protocol::{self, ClientFrame, FrameError};
use super::{Event, hub::ConnectError};
use crate::auth::AuthUser;
use crate::db;
use crate::error::AppError;
use crate::ratelimit::RateLimiter;
use crate::routes::messages::{post_message, validate_content};
use crate::state::AppState;

/// The largest frame a client may send (a 4000-character message fits with room to spare).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// How long a close frame may wait behind frames the client has not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Typing notices per channel: at most one every this often.
const TYPING_EVERY: Duration = Duration::from_secs(2);

pub const CLOSE_AUTH: u16 = 4001;
pub const CLOSE_TOO_MANY: u16 = 4029;

fn close_reason(code: u16, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(description.to_owned()),
    })
}

async fn close(session: Session, code: u16, description: &str) {
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT,
        session.close(close_reason(code, description)),
    )
    .await;
}

/// Runs a connection to its end. `header_auth` is the result of an `Authorization` header,
/// if the upgrade request had one.
pub async fn run(
    state: AppState,
    mut session: Session,
    mut stream: AggregatedMessageStream,
    header_auth: Option<Result<AuthUser, AppError>>,
    base_url: String,
) {
    let user = match header_auth {
        Some(Ok(user)) => user,
        Some(Err(_)) => return close(session, CLOSE_AUTH, "invalid token").await,
        // Boxed (here and for `on_message`): rarely-live futures would otherwise be inlined
        // into every idle connection's task.
        None => match Box::pin(first_frame_auth(&state, &mut session, &mut stream)).await {
            Some(user) => user,
            None => return close(session, CLOSE_AUTH, "authentication required").await,
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
            return close(session, 1011, "try again").await;
        }
    };
    let channel_ids: Vec<i32> = subscriptions.iter().map(|(id, _)| *id).collect();
    let hub = state.events.hub().clone();
    let connection = match hub
        .connect(user.id, subscriptions, Arc::from(base_url))
        .await
    {
        Ok(connection) => connection,
        Err(ConnectError::TooManyConnections) => {
            return close(session, CLOSE_TOO_MANY, "too many connections").await;
        }
        Err(ConnectError::Stopped) => return close(session, 1011, "shutting down").await,
    };
    let connection_id = connection.id;
    if session
        .text(protocol::ready(user.id, &channel_ids))
        .await
        .is_ok()
    {
        let ending = Live::new(&state, user, connection_id)
            .run(&mut session, &mut stream, connection)
            .await;
        if let Some((code, description)) = ending {
            hub.disconnect(connection_id).await;
            return close(session, code, description).await;
        }
    }
    hub.disconnect(connection_id).await;
}

/// Waits for `{"type":"auth","token":...}` as the first frame.
async fn first_frame_auth(
    state: &AppState,
    session: &mut Session,
    stream: &mut AggregatedMessageStream,
) -> Option<AuthUser> {
    let deadline = tokio::time::sleep(AUTH_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            _ = &mut deadline => return None,
            message = stream.next() => message?.ok()?,
        };
        match message {
            AggregatedMessage::Text(text) => {
                return match protocol::parse(&text) {
                    Ok(ClientFrame::Auth { token }) => state.tokens.verify(&token).ok(),
                    _ => None,
                };
            }
            AggregatedMessage::Ping(bytes) => {
                let _ = session.pong(&bytes).await;
            }
            AggregatedMessage::Pong(_) => {}
            AggregatedMessage::Binary(_) | AggregatedMessage::Close(_) => return None,
        }
    }
}

/// An authenticated connection's loop.
struct Live<'a> {
    state: &'a AppState,
    user: AuthUser,
    connection_id: u64,
    frame_budget: RateLimiter,
    last_rate_error: Option<Instant>,
    last_typing: std::collections::HashMap<i32, Instant>,
}

/// How the loop ended: a close frame to send, or `None` when the socket is already gone.
type Ending = Option<(u16, &'static str)>;

impl<'a> Live<'a> {
    fn new(state: &'a AppState, user: AuthUser, connection_id: u64) -> Self {
        Live {
            state,
            user,
            connection_id,
            // A flood of frames is refused (with an error frame now and then), not queued.
            frame_budget: RateLimiter::per_minute(1200),
            last_rate_error: None,
            last_typing: Default::default(),
        }
    }

    async fn run(
        &mut self,
        session: &mut Session,
        stream: &mut AggregatedMessageStream,
        mut connection: Connection,
    ) -> Ending {
        // A random phase, so connections opened together do not all ping together.
        let phase = HEARTBEAT_EVERY.mul_f64(rand::random::<f64>());
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + phase, HEARTBEAT_EVERY);
        let mut last_heard = Instant::now();
        let now_unix = chrono::Utc::now().timestamp();
        let expiry = tokio::time::sleep(Duration::from_secs(
            (self.user.expires_at - now_unix).max(0) as u64,
        ));
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                code = &mut connection.kicked => {
                    return Some((code.unwrap_or(1011), "too slow: catch up with GET messages?after="));
                }
                frame = connection.frames.recv() => {
                    let Some(frame) = frame else { return Some((1011, "closing")) };
                    // A socket that does not drain blocks here; the hub notices the full queue.
                    tokio::select! {
                        sent = session.text(frame) => if sent.is_err() { return None },
                        code = &mut connection.kicked => {
                            return Some((code.unwrap_or(1011), "too slow: catch up with GET messages?after="));
                        }
                    }
                }
                message = stream.next() => {
                    last_heard = Instant::now();
                    match message {
                        None => return None,
                        Some(Err(e)) => return Some(protocol_close(&e)),
                        Some(Ok(AggregatedMessage::Close(_))) => return Some((1000, "bye")),
                        Some(Ok(message)) => {
                            if let Some(reply) = Box::pin(self.on_message(session, message)).await
                                && session.text(reply).await.is_err()
                            {
                                return None;
                            }
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        return Some((1001, "no answer to pings"));
                    }
                    if session.ping(b"").await.is_err() {
                        return None;
                    }
                }
                _ = &mut expiry => return Some((CLOSE_AUTH, "token expired")),
            }
        }
    }

    /// Acts on one client message; returns a frame to answer with, if any.
    async fn on_message(
        &mut self,
        session: &mut Session,
        message: AggregatedMessage,
    ) -> Option<String> {
        let text = match message {
            AggregatedMessage::Text(text) => text,
            AggregatedMessage::Ping(bytes) => {
                let _ = session.pong(&bytes).await;
                return None;
            }
            AggregatedMessage::Pong(_) | AggregatedMessage::Close(_) => return None,
            AggregatedMessage::Binary(_) => {
                return Some(protocol::error(
                    "unsupported_frame",
                    "binary frames are not accepted",
                    None,
                ));
            }
        };
        if self.frame_budget.check(self.user.id).is_err() {
            // Say so at most once a second; drop the rest silently.
            let say = self
                .last_rate_error
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if say {
                self.last_rate_error = Some(Instant::now());
                return Some(protocol::error(
                    "rate_limited",
                    "too many frames; slow down",
                    None,
                ));
            }
            return None;
        }
        match protocol::parse(&text) {
            Err(FrameError { code, message }) => Some(protocol::error(code, &message, None)),
            Ok(ClientFrame::Ping) => Some(protocol::pong()),
            Ok(ClientFrame::Auth { .. }) => Some(protocol::error(
                "bad_request",
                "already authenticated",
                None,
            )),
            Ok(ClientFrame::Typing { channel_id }) => {
                self.typing(channel_id).await;
                None
            }
            Ok(ClientFrame::Message {
                channel_id,
                content,
                client_id,
            }) => {
                let posted = async {
                    validate_content(&content, false)?;
                    post_message(
                        self.state,
                        self.user.id,
                        channel_id,
                        content,
                        Vec::new(),
                        client_id.clone(),
                    )
                    .await
                }
                .await;
                // Success is answered by the `message_created` event, which echoes client_id.
                posted.err().map(|e| {
                    use actix_web::ResponseError;
                    let message = if e.status_code().is_server_error() {
                        "could not post the message".into()
                    } else {
                        e.to_string()
                    };
                    protocol::error(e.code(), &message, client_id.as_deref())
                })
            }
        }
    }

    /// Ephemeral and rate limited; only for channels this connection follows.
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

fn protocol_close(error: &ProtocolError) -> (u16, &'static str) {
    match error {
        ProtocolError::Overflow => (1009, "frame too large"),
        ProtocolError::Io(e) if e.to_string().contains("maximum continuation size") => {
            (1009, "message too large")
        }
        _ => (1002, "protocol error"),
    }
}
