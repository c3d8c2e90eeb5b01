//! The floor under `bench_ws`'s fan-out figures: the least any server has to do to deliver
//! the same events to the same sockets on this machine.
//!
//! It speaks just enough of the chat server's API for the benchmark: `GET /healthz`,
//! `GET /api/ws` (bearer token, the user's channels read from the same database) and
//! `POST /api/channels/{id}/messages`, which answers 201 at once and writes the event frame
//! straight to every member's socket from the posting task: one non-blocking `write` per
//! delivery, nothing stored, no queue, no hand-off to another task, no ordering, no HTTP
//! framework. What the chat server does on top of that (persisting the message, numbering
//! and ordering events, per-connection queues, Redis) is what the ratio between the two
//! measures.
//!
//! Run by `scripts/bench-ws.sh --floor` (the same benchmark, this binary in place of the
//! server); by hand: `bench_ws --server-bin target/release/examples/fanout_floor`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use chatserver::auth::TokenService;
use chatserver::config::Settings;
use chatserver::db::{self, Db};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Who follows which channel: each member's socket, written from any task.
type Followers = RwLock<HashMap<i32, Vec<Arc<TcpStream>>>>;

struct Floor {
    db: Db,
    tokens: TokenService,
    followers: Followers,
}

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let db = tokio::task::spawn_blocking({
        let target = settings.database.clone();
        move || Db::connect(&target)
    })
    .await??;
    let floor = Arc::new(Floor {
        db,
        tokens: TokenService::new(&settings.auth.jwt_secret, settings.auth.jwt_ttl_seconds),
        followers: RwLock::default(),
    });
    let listener = TcpListener::bind(&settings.server.bind_addr)
        .await
        .with_context(|| format!("binding {}", settings.server.bind_addr))?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let floor = floor.clone();
        tokio::spawn(async move {
            let _ = floor.connection(stream).await;
        });
    }
}

/// One request head: method, path, and the headers the floor needs.
struct Head {
    method: String,
    path: String,
    content_length: usize,
    bearer: Option<String>,
    websocket_key: Option<String>,
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Option<Head>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut head = Head {
        method: method.to_owned(),
        path: path.to_owned(),
        content_length: 0,
        bearer: None,
        websocket_key: None,
    };
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(Some(head));
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => head.content_length = value.parse()?,
            "authorization" => head.bearer = value.strip_prefix("Bearer ").map(str::to_owned),
            "sec-websocket-key" => head.websocket_key = Some(value.to_owned()),
            _ => {}
        }
    }
}

impl Floor {
    /// Serves a keep-alive connection until it closes or becomes a WebSocket.
    async fn connection(self: Arc<Self>, stream: TcpStream) -> anyhow::Result<()> {
        let mut reader = BufReader::new(stream);
        while let Some(head) = read_head(&mut reader).await? {
            let mut body = vec![0; head.content_length];
            reader.read_exact(&mut body).await?;
            match (head.method.as_str(), head.path.as_str()) {
                ("GET", "/healthz") => respond(&mut reader, "200 OK", "{}").await?,
                ("GET", "/api/ws") => return self.websocket(reader.into_inner(), head).await,
                ("POST", path) => {
                    let channel_id = path
                        .strip_prefix("/api/channels/")
                        .and_then(|rest| rest.strip_suffix("/messages"))
                        .and_then(|id| id.parse().ok());
                    match channel_id {
                        Some(channel_id) => {
                            respond(&mut reader, "201 Created", "{}").await?;
                            self.fan_out(channel_id, &body)?;
                        }
                        None => respond(&mut reader, "404 Not Found", "{}").await?,
                    }
                }
                _ => respond(&mut reader, "404 Not Found", "{}").await?,
            }
        }
        Ok(())
    }

    async fn websocket(&self, mut stream: TcpStream, head: Head) -> anyhow::Result<()> {
        let user = self.tokens.verify(head.bearer.as_deref().unwrap_or(""))?;
        let channels = self
            .db
            .run(move |conn| Ok(db::channels::subscriptions(conn, user.id)?))
            .await?;
        let accept = accept_key(head.websocket_key.as_deref().unwrap_or(""));
        let mut handshake = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        handshake.extend(text_frame(br#"{"type":"ready"}"#));
        stream.write_all(&handshake).await?;
        let stream = Arc::new(stream);
        self.follow(&channels, &stream, true);
        // Nothing to answer: read until the client goes away.
        let mut sink = [0u8; 512];
        while stream.readable().await.is_ok() {
            match stream.try_read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        self.follow(&channels, &stream, false);
        Ok(())
    }

    fn follow(&self, channels: &[(i32, i64)], stream: &Arc<TcpStream>, follow: bool) {
        let mut followers = self.followers.write().unwrap_or_else(|e| e.into_inner());
        for (channel_id, _) in channels {
            let members = followers.entry(*channel_id).or_default();
            if follow {
                members.push(stream.clone());
            } else {
                members.retain(|s| !Arc::ptr_eq(s, stream));
            }
        }
    }

    /// Writes the event to every member's socket, from this task, without waiting.
    fn fan_out(&self, channel_id: i32, body: &[u8]) -> anyhow::Result<()> {
        let posted: serde_json::Value = serde_json::from_slice(body)?;
        let event = serde_json::json!({
            "type": "message_created",
            "channel_id": channel_id,
            "message": { "channel_id": channel_id, "content": posted["content"] },
        });
        let frame = text_frame(event.to_string().as_bytes());
        let followers = self.followers.read().unwrap_or_else(|e| e.into_inner());
        for stream in followers.get(&channel_id).into_iter().flatten() {
            // A socket that cannot take the frame at once loses it (the benchmark counts it).
            let _ = stream.try_write(&frame);
        }
        Ok(())
    }
}

async fn respond(
    reader: &mut BufReader<TcpStream>,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    reader.get_mut().write_all(response.as_bytes()).await
}

/// An unmasked text frame, as a server sends it.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.push(0x81);
    match payload.len() {
        n @ 0..=125 => frame.push(n as u8),
        n => {
            frame.push(126);
            frame.extend(u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455, section 4.2.2).
fn accept_key(key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
}
