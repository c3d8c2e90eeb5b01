//! The WebSocket, with a real client against the real server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fixtures::{self, Upload};
use crate::helpers::{
    JWT_SECRET, TestApp, TestUser, eventually, expect_json, metric, spawn_app, spawn_app_with,
};
use crate::redis::{PrivateRedis, TestRedis};

const WAIT: Duration = Duration::from_secs(15);

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects, authenticating with an `Authorization` header when a token is given.
    pub async fn connect(app: &TestApp, header_token: Option<&str>) -> WsClient {
        let url = app.url("/api/ws").replace("http://", "ws://");
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = header_token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket handshake");
        WsClient { stream }
    }

    /// Connects and authenticates with the first frame; returns the client and `ready`.
    pub async fn login(app: &TestApp, user: &TestUser) -> (WsClient, Value) {
        let mut client = WsClient::connect(app, None).await;
        client
            .send(json!({ "type": "auth", "token": user.token }))
            .await;
        let ready = client.next().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        (client, ready)
    }

    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.unwrap();
    }

    /// The next JSON frame (pings are answered by the client library).
    pub async fn next(&mut self) -> Value {
        // One deadline for the call: the server's pings must not keep it waiting forever.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next event of this type, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    /// Connects with a tiny receive buffer, reads `ready`, and reads nothing more until told:
    /// a client that has stopped reading.
    pub async fn non_reader(app: &TestApp, user: &TestUser) -> WsClient {
        let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        let mut request = format!("ws://127.0.0.1:{port}/api/ws")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", user.token).parse().unwrap(),
        );
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        let mut client = WsClient { stream };
        assert_eq!(client.next().await["type"], "ready");
        client
    }

    pub async fn closed(&mut self) -> u16 {
        // One deadline for the call, as in `next`.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a close in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before a close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Closes from the client's side, and reads until the server has closed too.
    pub async fn close(&mut self) {
        self.stream.close(None).await.unwrap();
        let drained = async { while let Some(Ok(_)) = self.stream.next().await {} };
        tokio::time::timeout(WAIT, drained)
            .await
            .expect("the server closes in time");
    }

    /// Asserts the very next frame closes the socket (no `ready` first); returns its code.
    pub async fn refused(&mut self) -> u16 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a close in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a close frame first, got {other:?}"),
            }
        }
    }

    /// Sends a ping; returns the frames that arrive before its pong.
    pub async fn frames_before_pong(&mut self) -> Vec<Value> {
        self.send(json!({ "type": "ping" })).await;
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await;
            if frame["type"] == "pong" {
                return frames;
            }
            frames.push(frame);
        }
    }

    /// Sends a WebSocket-level ping (a control frame, which no frame budget counts) and
    /// returns the JSON frames that arrive before its pong: the answers to everything sent
    /// before it.
    pub async fn frames_before_control_pong(&mut self) -> Vec<Value> {
        let payload = uuid::Uuid::new_v4().simple().to_string();
        self.send_raw(Message::Ping(payload.clone().into_bytes().into()))
            .await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut frames = Vec::new();
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("the pong in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => frames.push(serde_json::from_str(&text).unwrap()),
                Message::Pong(bytes) if bytes[..] == *payload.as_bytes() => return frames,
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Asserts nothing else is queued: a ping is answered by the very next frame.
    pub async fn assert_quiet(&mut self) {
        self.send(json!({ "type": "ping" })).await;
        let next = self.next().await;
        assert_eq!(next["type"], "pong", "an unexpected frame: {next}");
    }
}

fn forge(user_id: i64, exp_from_now: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": user_id.to_string(), "iat": now, "exp": now + exp_from_now,
        "iss": "chatserver", "aud": "chatserver-api",
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn authenticates_by_header_or_by_first_frame() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let general = app.create_channel(&alice, "general", false).await;
    let secret = app.create_channel(&alice, "secret", true).await;

    let mut by_header = WsClient::connect(&app, Some(&alice.token)).await;
    let ready = by_header.next().await;
    assert_eq!(
        ready,
        json!({ "type": "ready", "user_id": alice.id, "channel_ids": [general, secret] })
    );
    by_header.assert_quiet().await;

    let (mut by_frame, ready) = WsClient::login(&app, &alice).await;
    assert_eq!(ready["channel_ids"], json!([general, secret]));
    by_frame.assert_quiet().await;
}

#[tokio::test]
async fn bad_expired_and_missing_tokens_close_with_4001() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;

    // Each is closed before `ready`: never subscribed to anything.
    let mut bad_header = WsClient::connect(&app, Some("not-a-token")).await;
    assert_eq!(bad_header.refused().await, 4001);

    let mut expired = WsClient::connect(&app, Some(&forge(alice.id, -3600))).await;
    assert_eq!(expired.refused().await, 4001);

    let mut bad_frame = WsClient::connect(&app, None).await;
    bad_frame
        .send(json!({ "type": "auth", "token": forge(alice.id, -3600) }))
        .await;
    assert_eq!(bad_frame.refused().await, 4001);

    let mut not_auth = WsClient::connect(&app, None).await;
    not_auth.send(json!({ "type": "ping" })).await;
    assert_eq!(not_auth.refused().await, 4001);

    // Silence: the server gives up after 10 seconds.
    let mut silent = WsClient::connect(&app, None).await;
    assert_eq!(silent.refused().await, 4001);
}

#[tokio::test]
async fn a_token_expiring_mid_session_closes_with_4001() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut client = WsClient::connect(&app, Some(&forge(alice.id, 2))).await;
    assert_eq!(client.next().await["type"], "ready");
    assert_eq!(client.closed().await, 4001);
}

#[tokio::test]
async fn events_reach_members_only_and_follow_joins_and_leaves() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let mine = app.create_channel(&alice, "mine", false).await;
    let theirs = app.create_channel(&bob, "theirs", false).await;
    let (mut alice_ws, _) = WsClient::login(&app, &alice).await;

    app.post_message(&bob, theirs, "not for alice").await;
    let message = app.post_message(&alice, mine, "for alice").await;
    let event = alice_ws.next().await;
    assert_eq!(event["type"], "message_created");
    assert_eq!(event["channel_id"], mine);
    assert_eq!(event["data"]["id"], message["id"]);
    alice_ws.assert_quiet().await;

    // Joining takes effect on the open socket: the join itself, then the channel's events.
    app.join(&alice, theirs).await;
    let joined = alice_ws.next().await;
    assert_eq!(
        (joined["type"].as_str(), &joined["data"]["user"]["username"]),
        (Some("member_joined"), &json!("alice"))
    );
    app.post_message(&bob, theirs, "now alice sees this").await;
    assert_eq!(
        alice_ws.next().await["data"]["content"],
        "now alice sees this"
    );

    // Leaving stops the channel's events at once.
    let left = app
        .delete(&format!("/api/channels/{theirs}/members/me"), &alice.token)
        .await;
    assert_eq!(left.status(), StatusCode::NO_CONTENT);
    assert_eq!(alice_ws.next().await["type"], "member_left");
    app.post_message(&bob, theirs, "alice is gone").await;
    app.post_message(&alice, mine, "still here").await;
    assert_eq!(alice_ws.next().await["data"]["content"], "still here");
    alice_ws.assert_quiet().await;
}

#[tokio::test]
async fn a_second_user_sees_messages_files_and_deletions_in_order() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let (mut alice_ws, _) = WsClient::login(&app, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&app, &bob).await;

    // Over REST.
    let rest = app.post_message(&alice, channel, "over REST").await;
    let seen = bob_ws.next().await;
    assert_eq!(
        (seen["type"].as_str(), &seen["data"]["id"]),
        (Some("message_created"), &rest["id"])
    );

    // Over the socket, echoing client_id.
    alice_ws.send(json!({ "type": "message", "channel_id": channel, "content": "over the socket", "client_id": "tmp-1" })).await;
    let echoed = alice_ws.next_of("message_created").await;
    let echoed = if echoed["data"]["client_id"] == "tmp-1" {
        echoed
    } else {
        alice_ws.next_of("message_created").await
    };
    assert_eq!(echoed["data"]["client_id"], "tmp-1");
    let seen = bob_ws.next().await;
    assert_eq!(seen["data"]["content"], "over the socket");
    assert_eq!(seen["data"]["id"], echoed["data"]["id"]);

    // A message with a file, then its deletion.
    let png = fixtures::png(3000);
    let response = app
        .post_files(
            &alice,
            channel,
            "a picture",
            &[Upload::new("p.png", "image/png", png.clone())],
        )
        .await;
    let message = expect_json(response, StatusCode::CREATED).await;
    let file_id = message["files"][0]["id"].clone();
    let created = bob_ws.next().await;
    assert_eq!(created["type"], "message_created");
    assert_eq!(created["data"]["files"][0]["id"], file_id);
    let complete = bob_ws.next().await;
    assert_eq!(complete["type"], "file_upload_complete");
    assert_eq!(complete["data"]["id"], file_id);
    // B's own link works (it was issued to B), until the deletion.
    let url = complete["data"]["url"].as_str().unwrap();
    let fetched = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert_eq!(fetched, png);

    let deleted = app
        .delete(&format!("/api/files/{file_id}"), &alice.token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = bob_ws.next().await;
    assert_eq!(gone["type"], "file_deleted");
    assert_eq!(
        gone["data"],
        json!({ "id": file_id, "message_id": message["id"], "channel_id": channel, "reason": "user" })
    );
    assert_eq!(
        reqwest::get(url).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    bob_ws.assert_quiet().await;
}

#[tokio::test]
async fn a_file_link_in_an_event_works_for_its_recipient() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let (mut bob_ws, _) = WsClient::login(&app, &bob).await;
    let pdf = fixtures::pdf(5000);
    let response = app
        .post_files(
            &alice,
            channel,
            "doc",
            &[Upload::new("d.pdf", "application/pdf", pdf.clone())],
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    bob_ws.next_of("message_created").await;
    let complete = bob_ws.next_of("file_upload_complete").await;
    let bytes = reqwest::get(complete["data"]["url"].as_str().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes, pdf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_arrive_everywhere_in_listing_order() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let channel = app.create_channel(&owner, "busy", false).await;
    let mut posters = Vec::new();
    for i in 0..4 {
        let user = app.register(&format!("poster{i}")).await;
        app.join(&user, channel).await;
        posters.push(user);
    }
    // The subscribers read while the posts are made, as clients do.
    let mut readers = Vec::new();
    for i in 0..3 {
        let user = app.register(&format!("reader{i}")).await;
        app.join(&user, channel).await;
        let mut subscriber = WsClient::login(&app, &user).await.0;
        readers.push(tokio::spawn(async move {
            let mut received = Vec::new();
            while received.len() < 1000 {
                let event = subscriber.next().await;
                if event["type"] == "message_created" {
                    received.push(event["data"]["id"].as_i64().unwrap());
                }
            }
            subscriber.assert_quiet().await;
            received
        }));
    }
    // 4 posters x 250 messages, 8 requests in flight at a time each; half of the posters
    // post over their sockets.
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for (p, poster) in posters.into_iter().enumerate() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            if p % 2 == 1 {
                return post_over_socket(&app, &poster, channel, p, 250).await;
            }
            futures_util::stream::iter(0..250)
                .for_each_concurrent(8, |i| {
                    let (app, poster) = (&app, &poster);
                    async move {
                        app.post_message(poster, channel, &format!("p{p} m{i}"))
                            .await;
                    }
                })
                .await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut listed: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let page = expect_json(
            app.get(
                &format!("/api/channels/{channel}/messages?after={after}&limit=100"),
                &owner.token,
            )
            .await,
            StatusCode::OK,
        )
        .await;
        let ids: Vec<i64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect();
        listed.extend(&ids);
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        after = *ids.last().unwrap();
    }
    assert_eq!(listed.len(), 1000);
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            listed,
            "same order as the listing, none missing, none twice"
        );
    }
}

/// Posts `count` messages over a socket of the poster's, without waiting for each echo;
/// returns once all have been echoed.
async fn post_over_socket(app: &TestApp, poster: &TestUser, channel: i64, p: usize, count: usize) {
    let (mut socket, _) = WsClient::login(app, poster).await;
    for i in 0..count {
        let content = format!("p{p} m{i}");
        socket
            .send(json!({ "type": "message", "channel_id": channel, "content": content, "client_id": format!("{i}") }))
            .await;
    }
    let mut echoed = 0;
    while echoed < count {
        let event = socket.next().await;
        if event["data"]["client_id"].is_string() && event["data"]["user_id"] == poster.id {
            echoed += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4008_and_others_keep_up() {
    // Time enough for the slow client to read its close frame at the end.
    let app = spawn_app_with(&[
        ("WS_QUEUE_CAPACITY", "64"),
        ("WS_CLOSE_TIMEOUT_SECONDS", "300"),
    ])
    .await;
    let (alice, slow_user, channel) = app.two_members().await;
    app.grant_admin("alice").await;
    let (mut reader, _) = WsClient::login(&app, &alice).await;
    let mut slow = WsClient::non_reader(&app, &slow_user).await;

    let content = "x".repeat(4000);
    let total = 1500;
    let reader_task = tokio::spawn(async move {
        let mut seen = 0;
        while seen < total {
            if reader.next().await["type"] == "message_created" {
                seen += 1;
            }
        }
        reader.assert_quiet().await;
        seen
    });
    for _ in 0..total {
        app.post_message(&alice, channel, &content).await;
    }
    assert_eq!(
        reader_task.await.unwrap(),
        total,
        "the reading client got every event"
    );
    assert_eq!(
        app.state
            .events
            .hub()
            .stats()
            .slow_disconnects
            .load(Ordering::Relaxed),
        1
    );
    // When the slow client finally reads, what was queued ends with 4008.
    assert_eq!(slow.closed().await, 4008);
    let metrics = app.metrics();
    assert_eq!(
        metric(
            &metrics,
            r#"chatserver_websocket_closes_total{code="4008"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    // Operators see it counted.
    let status = expect_json(
        app.get("/api/admin/realtime-status", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(status["slow_disconnects"], 1, "{status}");
    assert_eq!(status["resync_disconnects"], 0, "{status}");
    assert_eq!(status["redis"], false);
    let refused = app
        .get("/api/admin/realtime-status", &slow_user.token)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_client_that_does_not_read_its_close_frame_is_cut_off() {
    let app = spawn_app_with(&[
        ("WS_QUEUE_CAPACITY", "16"),
        ("WS_SEND_BUFFER_BYTES", "4096"),
        ("WS_CLOSE_TIMEOUT_SECONDS", "1"),
    ])
    .await;
    let (alice, slow_user, channel) = app.two_members().await;
    let mut slow = WsClient::non_reader(&app, &slow_user).await;

    let stats = app.state.events.hub().stats();
    let content = "x".repeat(4000);
    let mut posted = 0;
    while stats.slow_disconnects.load(Ordering::Relaxed) == 0 {
        assert!(posted < 1000, "the non-reader was never closed as too slow");
        app.post_message(&alice, channel, &content).await;
        posted += 1;
    }
    // Its 4008 waits behind frames it does not read; after the close timeout the server
    // shuts the socket down instead of keeping it open for as long as the client likes.
    // This sleep stays on purpose: what is tested is a client that does not read for
    // longer than WS_CLOSE_TIMEOUT_SECONDS (1 s), which takes that much wall-clock time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    loop {
        let message = tokio::time::timeout(WAIT, slow.stream.next())
            .await
            .expect("the socket ends in time");
        match message {
            Some(Ok(Message::Close(frame))) => panic!("the close frame was still sent: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
}

#[tokio::test]
async fn bad_frames_get_errors_and_oversized_frames_close_with_1009() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let (mut client, _) = WsClient::login(&app, &alice).await;

    client.send_raw(Message::text("{not json")).await;
    assert_eq!(client.next().await["code"], "invalid_json");
    client.send(json!({ "type": "dance" })).await;
    assert_eq!(client.next().await["code"], "unknown_type");
    client
        .send(json!({ "type": "message", "channel_id": channel }))
        .await;
    assert_eq!(client.next().await["code"], "bad_request");
    client
        .send(json!({ "type": "message", "channel_id": 9999, "content": "hi", "client_id": "c9" }))
        .await;
    let error = client.next().await;
    assert_eq!(
        (
            error["type"].as_str(),
            error["code"].as_str(),
            error["client_id"].as_str()
        ),
        (Some("error"), Some("not_found"), Some("c9"))
    );
    client
        .send(json!({ "type": "message", "channel_id": channel, "content": "" }))
        .await;
    assert_eq!(client.next().await["code"], "invalid_content");
    client.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(client.next().await["code"], "unsupported_frame");
    client.assert_quiet().await;

    let huge = json!({ "type": "message", "channel_id": channel, "content": "y".repeat(100_000) });
    client.send(huge).await;
    assert_eq!(client.closed().await, u16::from(CloseCode::Size));
}

/// At most 1200 frames a minute: a flood's first 1200 are served, the excess is dropped
/// (with a `rate_limited` error at most once a second, not one per frame), and the
/// connection stays open and usable.
#[tokio::test]
async fn frames_beyond_1200_a_minute_are_dropped_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (mut client, _) = WsClient::login(&app, &alice).await;
    let flood = 3000;
    for _ in 0..flood {
        client.send(json!({ "type": "ping" })).await;
    }
    let answers = client.frames_before_control_pong().await;
    let pongs = answers.iter().filter(|f| f["type"] == "pong").count();
    let errors: Vec<&Value> = answers.iter().filter(|f| f["type"] == "error").collect();
    assert_eq!(pongs + errors.len(), answers.len(), "{answers:?}");
    assert!(
        pongs >= 1200,
        "the budget's 1200 frames were served: {pongs}"
    );
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e["code"] == "rate_limited"),
        "{errors:?}"
    );
    assert!(
        pongs + errors.len() < flood - 1000,
        "the excess was dropped: {pongs} pongs, {} errors for {flood} frames",
        errors.len()
    );
    // Still open, and served again once the budget refills (20 frames a second).
    let served_again = async || {
        client.send(json!({ "type": "ping" })).await;
        let answers = client.frames_before_control_pong().await;
        answers.iter().any(|f| f["type"] == "pong")
    };
    assert!(
        eventually(served_again).await,
        "never served again after the flood"
    );
}

#[tokio::test]
async fn typing_is_relayed_to_other_members_and_not_stored() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let private = app.create_channel(&alice, "private", true).await;
    app.join(&bob, channel).await;
    let (mut alice_ws, _) = WsClient::login(&app, &alice).await;
    let (mut alice_tab, _) = WsClient::login(&app, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&app, &bob).await;
    // Typing twice in a row, and again from her other tab: relayed once (at most one notice
    // per user and channel every 2 s, however many sockets they come from).
    for _ in 0..2 {
        alice_ws
            .send(json!({ "type": "typing", "channel_id": channel }))
            .await;
    }
    alice_tab
        .send(json!({ "type": "typing", "channel_id": channel }))
        .await;
    // Not a member: ignored.
    bob_ws
        .send(json!({ "type": "typing", "channel_id": private }))
        .await;
    // Once the sessions have handled their frames and the hub what they sent, all that
    // will ever be relayed is queued.
    let mut to_alice = alice_ws.frames_before_pong().await;
    to_alice.extend(alice_tab.frames_before_pong().await);
    let mut to_bob = bob_ws.frames_before_pong().await;
    app.state.events.hub().sync().await;
    to_alice.extend(alice_ws.frames_before_pong().await);
    to_alice.extend(alice_tab.frames_before_pong().await);
    to_bob.extend(bob_ws.frames_before_pong().await);

    let notice = json!({ "type": "typing", "channel_id": channel, "data": { "channel_id": channel, "user_id": alice.id } });
    assert_eq!(
        to_bob,
        std::slice::from_ref(&notice),
        "one notice, none from the private channel"
    );
    assert_eq!(to_alice, [] as [Value; 0], "not told of her own typing");

    // Two seconds on, she may say so again. (A sleep on purpose: the window is 2 s of
    // wall-clock time in the server, documented and not a setting.)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    alice_ws
        .send(json!({ "type": "typing", "channel_id": channel }))
        .await;
    assert_eq!(bob_ws.next().await["type"], "typing");

    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["messages"], json!([]));
}

#[tokio::test]
async fn events_cross_instances_exactly_once_through_redis() {
    let Some(redis) = TestRedis::start("events_cross_instances_exactly_once_through_redis").await
    else {
        return;
    };
    let redis_channel = format!("chatserver-test:{}", uuid::Uuid::new_v4().simple());
    let settings = [
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_CHANNEL", redis_channel.as_str()),
    ];
    let one = spawn_app_with(&settings).await;
    let two = one.spawn_peer(&[]).await;
    let alice = one.register("alice").await;
    let bob = one.register("bobby").await;
    let channel = one.create_channel(&alice, "general", false).await;
    two.join(&bob, channel).await;
    let (mut alice_ws, _) = WsClient::login(&one, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&two, &bob).await;
    // Let both instances' Redis subscriptions settle before publishing.
    wait_for_redis(&one, &alice, &mut alice_ws, &mut bob_ws, channel).await;

    let png = fixtures::png(2000);
    let response = one
        .post_files(
            &alice,
            channel,
            "through one",
            &[Upload::new("a.png", "image/png", png.clone())],
        )
        .await;
    let message = expect_json(response, StatusCode::CREATED).await;
    let created = bob_ws.next().await;
    assert_eq!(
        (created["type"].as_str(), &created["data"]["id"]),
        (Some("message_created"), &message["id"])
    );
    let complete = bob_ws.next().await;
    assert_eq!(complete["type"], "file_upload_complete");
    // The link was issued by instance two, and works.
    let bytes = reqwest::get(complete["data"]["url"].as_str().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes, png);
    bob_ws.assert_quiet().await;

    two.post_message(&bob, channel, "through two").await;
    let seen: Vec<(String, String)> = [
        alice_ws.next().await,
        alice_ws.next().await,
        alice_ws.next().await,
    ]
    .iter()
    .map(|e| {
        (
            e["type"].as_str().unwrap().to_owned(),
            e["data"]["content"].as_str().unwrap_or("").to_owned(),
        )
    })
    .collect();
    let expected = [
        ("message_created", "through one"),
        ("file_upload_complete", ""),
        ("message_created", "through two"),
    ];
    assert_eq!(seen, expected.map(|(t, c)| (t.to_owned(), c.to_owned())));
    alice_ws.assert_quiet().await;
}

/// Posts until an event crosses from instance one to the other (their subscriptions may not
/// be up yet), then drains both sockets.
async fn wait_for_redis(
    one: &TestApp,
    alice: &TestUser,
    alice_ws: &mut WsClient,
    bob_ws: &mut WsClient,
    channel: i64,
) {
    for attempt in 0..50 {
        let content = format!("warm-up {attempt}");
        one.post_message(alice, channel, &content).await;
        assert_eq!(alice_ws.next().await["data"]["content"], content);
        let crossed = tokio::time::timeout(Duration::from_millis(200), bob_ws.next()).await;
        if let Ok(event) = crossed {
            assert_eq!(event["data"]["content"], content);
            return;
        }
    }
    panic!("no event crossed through Redis");
}

#[tokio::test]
async fn without_redis_an_instance_keeps_serving_its_own_clients() {
    // Nothing listens on port 1.
    let app = spawn_app_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let (mut alice_ws, _) = WsClient::login(&app, &alice).await;
    let message = app.post_message(&alice, channel, "local only").await;
    let event = alice_ws.next().await;
    assert_eq!(event["data"]["id"], message["id"]);
    alice_ws.assert_quiet().await;
}

#[tokio::test]
async fn a_channel_created_while_connected_is_followed_at_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (mut alice_ws, ready) = WsClient::login(&app, &alice).await;
    assert_eq!(ready["channel_ids"], json!([]));
    let channel = app.create_channel(&alice, "fresh", true).await;
    let joined = alice_ws.next().await;
    assert_eq!(joined["type"], "member_joined");
    assert_eq!(joined["channel_id"], channel);
    assert_eq!(joined["data"]["user"]["id"], alice.id);
    app.post_message(&alice, channel, "first").await;
    assert_eq!(alice_ws.next().await["data"]["content"], "first");
    alice_ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_outage_instances_resync_their_clients_and_carry_on() {
    let Some(mut redis) =
        PrivateRedis::start("after_a_redis_outage_instances_resync_their_clients_and_carry_on")
            .await
    else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let one = spawn_app_with(&[("REDIS_URL", url.as_str())]).await;
    let two = one.spawn_peer(&[]).await;
    let (alice, bob, channel) = one.two_members().await;
    let (mut alice_ws, _) = WsClient::login(&one, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&two, &bob).await;
    wait_for_redis(&one, &alice, &mut alice_ws, &mut bob_ws, channel).await;
    let before = one.post_message(&alice, channel, "before").await;
    assert_eq!(bob_ws.next().await["data"]["content"], "before");
    alice_ws.next().await;

    redis.stop();
    // Redis is gone: instance one still serves its own clients, at once.
    let during = one.post_message(&alice, channel, "during").await;
    assert_eq!(alice_ws.next().await["data"]["id"], during["id"]);

    let redis = PrivateRedis::start_on(redis.port);
    redis.wait_ready().await;
    // Both instances lost their subscription: once subscribed again they close their
    // connections with 4009 (events from the other instance may be missing). Bob may first
    // get the event queued on instance one while Redis was away.
    assert_eq!(alice_ws.closed().await, 4009);
    assert_eq!(bob_ws.closed().await, 4009);

    // Bob reconnects and resyncs: nothing is missing.
    let (mut bob_ws, _) = WsClient::login(&two, &bob).await;
    let page = expect_json(
        two.get(
            &format!("/api/channels/{channel}/messages?after={}", before["id"]),
            &bob.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["messages"][0]["id"], during["id"]);
    // And events cross again.
    let (mut alice_ws, _) = WsClient::login(&one, &alice).await;
    wait_for_redis(&one, &alice, &mut alice_ws, &mut bob_ws, channel).await;
    drop(redis);
}

/// A shutdown's last step: what an instance holds for Redis is published before it exits
/// (within a limit), not lost with the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_waits_until_redis_has_taken_the_queued_events() {
    let Some(redis) =
        PrivateRedis::start("a_flush_waits_until_redis_has_taken_the_queued_events").await
    else {
        return;
    };
    let proxy = CuttableProxy::start(redis.port).await;
    let through_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let direct = format!("redis://127.0.0.1:{}", redis.port);
    let one = spawn_app_with(&[("REDIS_URL", through_proxy.as_str())]).await;
    let two = one.spawn_peer(&[("REDIS_URL", direct.as_str())]).await;
    let (alice, bob, channel) = one.two_members().await;
    let (mut alice_ws, _) = WsClient::login(&one, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&two, &bob).await;
    wait_for_redis(&one, &alice, &mut alice_ws, &mut bob_ws, channel).await;
    assert!(one.state.events.flush(WAIT).await, "nothing is waiting");

    proxy.cut();
    one.post_message(&alice, channel, "held").await;
    // Redis is out of reach: the event stays queued, and a flush gives up at its limit.
    assert!(!one.state.events.flush(Duration::from_millis(200)).await);
    proxy.restore();
    assert!(
        one.state.events.flush(WAIT).await,
        "published once Redis is back"
    );
    assert_eq!(bob_ws.next().await["data"]["content"], "held");
    drop(redis);
}

/// A TCP forwarder to a local port whose connections can be cut (and new ones refused)
/// for a while: one instance loses Redis while another keeps it.
struct CuttableProxy {
    port: u16,
    open: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttableProxy {
    async fn start(upstream: u16) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let (open, tasks) = (open.clone(), tasks.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: refused
                    }
                    let forwarding = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    tasks.lock().unwrap().push(forwarding.abort_handle());
                }
            }
        });
        tasks.lock().unwrap().push(accepting.abort_handle());
        CuttableProxy { port, open, tasks }
    }

    /// Closes every forwarded connection and refuses new ones until `restore`.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut tasks = self.tasks.lock().unwrap();
        // The first is the accepting loop, which stays.
        tasks.drain(1..).for_each(|task| task.abort());
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.tasks
            .lock()
            .unwrap()
            .iter()
            .for_each(|task| task.abort());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_an_instance_could_not_publish_close_the_channel_elsewhere_with_4009() {
    let Some(redis) = PrivateRedis::start(
        "events_an_instance_could_not_publish_close_the_channel_elsewhere_with_4009",
    )
    .await
    else {
        return;
    };
    let proxy = CuttableProxy::start(redis.port).await;
    let through_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let direct = format!("redis://127.0.0.1:{}", redis.port);
    // Instance one reaches Redis through the proxy and holds two events while it cannot;
    // instance two reaches it directly.
    let one = spawn_app_with(&[
        ("REDIS_URL", through_proxy.as_str()),
        ("REDIS_PUBLISH_QUEUE", "2"),
    ])
    .await;
    let two = one.spawn_peer(&[("REDIS_URL", direct.as_str())]).await;
    let (alice, bob, channel) = one.two_members().await;
    let (mut alice_ws, _) = WsClient::login(&one, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&two, &bob).await;
    wait_for_redis(&one, &alice, &mut alice_ws, &mut bob_ws, channel).await;
    let before = one.post_message(&alice, channel, "before").await;
    assert_eq!(bob_ws.next().await["data"]["content"], "before");

    proxy.cut();
    // One cannot publish, and two keeps its subscription. Of six messages one holds three
    // (one in hand, two queued); the others are lost to two, and nothing after them would
    // show two a gap in the channel.
    for n in 0..6 {
        one.post_message(&alice, channel, &format!("cut {n}")).await;
    }
    proxy.restore();
    // Back on Redis, one publishes what it held and names the channel that lost events:
    // two closes Bob's socket so that he catches up.
    assert_eq!(bob_ws.closed().await, 4009);
    let metrics = two.metrics();
    assert_eq!(
        metric(
            &metrics,
            r#"chatserver_websocket_closes_total{code="4009"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    let (_bob_ws, _) = WsClient::login(&two, &bob).await;
    let page = expect_json(
        two.get(
            &format!("/api/channels/{channel}/messages?after={}", before["id"]),
            &bob.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let contents: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        (0..6).map(|n| format!("cut {n}")).collect::<Vec<_>>()
    );
    drop(redis);
}

/// A WebSocket client that writes raw frames, to break the protocol on purpose.
struct RawWs {
    tcp: TcpStream,
    read: Vec<u8>,
}

impl RawWs {
    async fn open(app: &TestApp, token: &str) -> RawWs {
        RawWs::open_with(app, Some(token)).await
    }

    /// Opens a socket, authenticated by header when a token is given.
    async fn open_with(app: &TestApp, token: Option<&str>) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = app.address.trim_start_matches("http://");
        let mut tcp = TcpStream::connect(address).await.unwrap();
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /api/ws HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{authorization}\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut read = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server hung up during the handshake");
            read.extend_from_slice(&chunk[..n]);
            if let Some(i) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        assert!(read.starts_with(b"HTTP/1.1 101"), "not upgraded");
        read.drain(..head_end);
        RawWs { tcp, read }
    }

    /// A client frame: masked unless `masked` is false (a protocol violation).
    fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut frame = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [7u8, 1, 9, 3];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        frame
    }

    async fn send(&mut self, bytes: &[u8]) {
        tokio::io::AsyncWriteExt::write_all(&mut self.tcp, bytes)
            .await
            .unwrap();
    }

    /// Reads server frames until a close frame; returns its code.
    async fn close_code(&mut self) -> u16 {
        use tokio::io::AsyncReadExt;
        loop {
            if self.read.len() >= 2 {
                let (opcode, short) = (self.read[0] & 0x0f, (self.read[1] & 0x7f) as usize);
                let (header, len) = match short {
                    126 if self.read.len() >= 4 => {
                        (4, u16::from_be_bytes([self.read[2], self.read[3]]) as usize)
                    }
                    126 | 127 => (usize::MAX, 0), // never this long from the server here
                    n => (2, n),
                };
                assert_ne!(header, usize::MAX, "an unexpectedly long frame");
                if self.read.len() >= header + len {
                    let payload: Vec<u8> = self.read.drain(..header + len).skip(header).collect();
                    if opcode == 0x8 {
                        return u16::from_be_bytes([payload[0], payload[1]]);
                    }
                    continue;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
                .await
                .expect("a frame in time")
                .unwrap();
            assert!(n > 0, "the socket ended without a close frame");
            self.read.extend_from_slice(&chunk[..n]);
        }
    }
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_oversized_fragments_with_1009() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let ping = json!({ "type": "ping" }).to_string();

    // A client frame without a mask, before authentication and after.
    for token in [None, Some(alice.token.as_str())] {
        let mut unmasked = RawWs::open_with(&app, token).await;
        unmasked
            .send(&RawWs::frame(true, 0x1, ping.as_bytes(), false))
            .await;
        assert_eq!(
            unmasked.close_code().await,
            1002,
            "authenticated: {}",
            token.is_some()
        );
    }
    // A reserved opcode before authentication.
    let mut reserved = RawWs::open_with(&app, None).await;
    reserved.send(&RawWs::frame(true, 0x3, b"??", true)).await;
    assert_eq!(reserved.close_code().await, 1002);

    // A reserved opcode.
    let mut reserved = RawWs::open(&app, &alice.token).await;
    reserved.send(&RawWs::frame(true, 0x3, b"??", true)).await;
    assert_eq!(reserved.close_code().await, 1002);

    // A message in fragments, each under the limit, together over it.
    let mut fragments = RawWs::open(&app, &alice.token).await;
    let piece = vec![b'x'; 40 * 1024];
    fragments
        .send(&RawWs::frame(false, 0x1, &piece, true))
        .await;
    fragments
        .send(&RawWs::frame(false, 0x0, &piece, true))
        .await;
    fragments.send(&RawWs::frame(true, 0x0, &piece, true)).await;
    assert_eq!(fragments.close_code().await, 1009);

    // Nothing is left behind in the hub.
    let hub = app.state.events.hub();
    let none_registered = async || {
        hub.sync().await;
        let connections = &hub.stats().connections;
        connections.load(Ordering::Relaxed) == 0
    };
    assert!(
        eventually(none_registered).await,
        "closed connections are still registered"
    );
}

/// A masked text frame header that declares `length` bytes of payload, and its mask.
fn declared_header(length: u64) -> Vec<u8> {
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&[7, 1, 9, 3]);
    header
}

#[tokio::test]
async fn a_frame_declared_over_the_limit_closes_with_1009_before_its_payload() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    // Before authentication and after: the header alone is enough to refuse it, so the
    // server never waits for (or buffers) a terabyte of payload.
    for token in [None, Some(alice.token.as_str())] {
        let mut raw = RawWs::open_with(&app, token).await;
        raw.send(&declared_header(1 << 40)).await;
        raw.send(&[b'x'; 4096]).await;
        assert_eq!(
            raw.close_code().await,
            1009,
            "authenticated: {}",
            token.is_some()
        );
    }
    // Just over the limit is refused the same way.
    let mut over = RawWs::open(&app, &alice.token).await;
    over.send(&declared_header(64 * 1024 + 1)).await;
    assert_eq!(over.close_code().await, 1009);
}

#[tokio::test]
async fn a_flood_of_empty_continuation_frames_is_cut_off() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut raw = RawWs::open(&app, &alice.token).await;
    raw.send(&RawWs::frame(false, 0x1, b"{", true)).await;
    let empty = RawWs::frame(false, 0x0, b"", true);
    let flood: Vec<u8> = empty
        .iter()
        .copied()
        .cycle()
        .take(empty.len() * 5000)
        .collect();
    // The server may close before it has read everything: a failed write is fine.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut raw.tcp, &flood).await;
    assert_eq!(raw.close_code().await, 1002);
}

#[tokio::test]
async fn a_user_may_hold_a_limited_number_of_sockets() {
    let app = spawn_app_with(&[("WS_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let alice = app.register("alice").await;
    let (first, _) = WsClient::login(&app, &alice).await;
    let (_second, _) = WsClient::login(&app, &alice).await;
    let mut third = WsClient::connect(&app, Some(&alice.token)).await;
    assert_eq!(third.refused().await, 4029, "refused, with no ready first");

    // Another user is not affected; closing one of alice's frees a place.
    let bob = app.register("bobby").await;
    WsClient::login(&app, &bob).await;
    drop(first);
    let accepted = async || {
        let mut again = WsClient::connect(&app, Some(&alice.token)).await;
        let message = tokio::time::timeout(WAIT, again.stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            return false; // still refused: a close frame
        };
        assert!(text.contains("\"ready\""), "{text}");
        true
    };
    assert!(
        eventually(accepted).await,
        "the closed socket's place was never freed"
    );
}

#[tokio::test]
async fn a_peer_that_falls_silent_is_closed_and_one_that_answers_pings_is_not() {
    let app = spawn_app_with(&[("WS_HEARTBEAT_SECONDS", "1")]).await;
    let alice = app.register("alice").await;
    // The raw client never answers the server's pings; the other answers them as it reads.
    let mut silent = RawWs::open(&app, &alice.token).await;
    let (mut answering, _) = WsClient::login(&app, &alice).await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        // Reading is what answers the pings (the client library replies as it reads).
        loop {
            tokio::select! {
                _ = &mut stopped => return answering,
                message = answering.stream.next() => match message {
                    Some(Ok(Message::Close(frame))) => panic!("closed: {frame:?}"),
                    Some(Ok(_)) => {}
                    other => panic!("the socket failed: {other:?}"),
                },
            }
        }
    });
    assert_eq!(silent.close_code().await, 1001);
    // By now the answering client has been pinged several times and is still open.
    stop.send(()).unwrap();
    reader.await.unwrap().assert_quiet().await;
}

#[tokio::test]
async fn before_authentication_a_bad_header_or_frame_closes_at_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;

    // Not a bearer token: refused, not taken as "no header" (a token frame after it is late).
    let url = app.url("/api/ws").replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut basic = WsClient { stream };
    basic
        .stream
        .send(Message::text(
            json!({ "type": "auth", "token": alice.token }).to_string(),
        ))
        .await
        .ok();
    assert_eq!(basic.refused().await, 4001);

    // An oversized first frame is a size error, not an authentication one.
    let mut huge = WsClient::connect(&app, None).await;
    huge.send_raw(Message::text("z".repeat(100_000))).await;
    assert_eq!(huge.refused().await, u16::from(CloseCode::Size));

    // A client that closes first gets a normal close back.
    let mut polite = WsClient::connect(&app, None).await;
    polite.send_raw(Message::Close(None)).await;
    assert_eq!(polite.refused().await, 1000);
}

#[tokio::test]
async fn upgrades_elsewhere_and_plain_requests_to_the_socket_get_json_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;

    // An upgrade asked of another path: 404 in the API's format, and the connection ends.
    let address = app.address.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /api/channels HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the connection ends")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    // The socket's path without the upgrade headers: 400, not a handshake.
    let plain = reqwest::get(app.url("/api/ws")).await.unwrap();
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

/// An event for many sockets is written by the worker threads that serve them (one
/// hand-off per worker): every socket still gets every event, once, in order.
#[tokio::test]
async fn a_large_fan_out_reaches_every_socket_in_order() {
    let app = spawn_app_with(&[("WS_MAX_CONNECTIONS_PER_USER", "64")]).await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let mut sockets = Vec::new();
    // More than the hub writes inline (32).
    for _ in 0..40 {
        sockets.push(WsClient::login(&app, &alice).await.0);
    }
    for n in 0..20 {
        app.post_message(&alice, channel, &format!("m{n}")).await;
    }
    for socket in &mut sockets {
        for n in 0..20 {
            let event = socket.next_of("message_created").await;
            assert_eq!(event["data"]["content"], format!("m{n}"));
        }
        socket.assert_quiet().await;
    }
}

/// Links in a socket's events follow the same rule as REST answers: a `Forwarded` header
/// counts only from a `TRUSTED_PROXIES` peer.
#[tokio::test]
async fn links_in_events_follow_forwarding_headers_only_from_trusted_proxies() {
    for (trusted, from_proxy) in [("", false), ("127.0.0.1", true)] {
        let app = spawn_app_with(&[("TRUSTED_PROXIES", trusted)]).await;
        let (alice, bob, channel) = app.two_members().await;
        let url = app.url("/api/ws").replace("http://", "ws://");
        let mut request = url.into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "authorization",
            format!("Bearer {}", bob.token).parse().unwrap(),
        );
        headers.insert(
            "forwarded",
            "proto=https;host=chat.example".parse().unwrap(),
        );
        let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut bob_ws = WsClient { stream };
        assert_eq!(bob_ws.next().await["type"], "ready");
        let files = [Upload::new("p.png", "image/png", fixtures::png(500))];
        let response = app.post_files(&alice, channel, "pic", &files).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let complete = bob_ws.next_of("file_upload_complete").await;
        let link = complete["data"]["url"].as_str().unwrap();
        let base = if from_proxy {
            "https://chat.example".to_owned()
        } else {
            app.address.clone()
        };
        assert!(
            link.starts_with(&format!("{base}/api/files/")),
            "trusted {trusted:?}: {link}"
        );
    }
}
