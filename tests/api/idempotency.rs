//! Safe retries: `Idempotency-Key` on message posts and uploads, `client_id` on the socket.

use std::collections::HashSet;

use chatserver::db::schema::idempotency_keys;
use chatserver::idempotency::{Fingerprint, Outcome, Scope};
use diesel::prelude::*;
use futures_util::future::join_all;
use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::fixtures::{self, Upload};
use crate::helpers::{TestApp, TestUser, expect_error, expect_json, spawn_app, spawn_app_with};
use crate::ws::WsClient;

const KEY: &str = "Idempotency-Key";

async fn post_with_key(
    app: &TestApp,
    user: &TestUser,
    channel: i64,
    key: &str,
    body: Value,
) -> Response {
    app.client
        .post(app.url(&format!("/api/channels/{channel}/messages")))
        .bearer_auth(&user.token)
        .header(KEY, key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn messages(app: &TestApp, user: &TestUser, channel: i64) -> Vec<Value> {
    let body = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &user.token)
            .await,
        StatusCode::OK,
    )
    .await;
    body["messages"].as_array().unwrap().clone()
}

fn replayed(response: &Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// Of answers to concurrent copies of one request: each is `201` (the first, or a replay of
/// it) or `409 idempotency_key_in_flight` with `Retry-After` (while the first ran); at least
/// one is `201`, and every `201` is the same body. Returns that body.
async fn one_answer(responses: Vec<Response>) -> Value {
    let mut created: Vec<Value> = Vec::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created.push(response.json().await.unwrap()),
            StatusCode::CONFLICT => {
                assert_eq!(response.headers()["retry-after"], "1");
                expect_error(response, StatusCode::CONFLICT, "idempotency_key_in_flight").await;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    let first = created.first().expect("at least one 201").clone();
    assert!(
        created.iter().all(|c| *c == first),
        "different answers: {created:?}"
    );
    first
}

#[tokio::test]
async fn ten_concurrent_identical_posts_with_one_key_make_one_message() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let body = json!({ "content": "once" });
    let posts = (0..10).map(|_| post_with_key(&app, &alice, channel, "k-ten", body.clone()));
    let first = one_answer(join_all(posts).await).await;

    let listed = messages(&app, &alice, channel).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], first["id"]);

    // After completion, a retry is a replay: the same body, marked.
    let again = post_with_key(&app, &alice, channel, "k-ten", body).await;
    assert!(replayed(&again));
    assert_eq!(expect_json(again, StatusCode::CREATED).await, first);
    assert_eq!(messages(&app, &alice, channel).await.len(), 1);
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_422_and_keys_are_per_user() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let other = app.create_channel(&alice, "other", false).await;
    let first = post_with_key(&app, &alice, channel, "k1", json!({ "content": "one" })).await;
    let first = expect_json(first, StatusCode::CREATED).await;
    // Another body, or the same body to another channel.
    let response = post_with_key(&app, &alice, channel, "k1", json!({ "content": "two" })).await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    let response = post_with_key(&app, &alice, other, "k1", json!({ "content": "one" })).await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    // Bob's "k1" is his own.
    let response = post_with_key(&app, &bob, channel, "k1", json!({ "content": "one" })).await;
    assert!(!replayed(&response));
    let bobs = expect_json(response, StatusCode::CREATED).await;
    assert_ne!(bobs["id"], first["id"]);
    assert_eq!(bobs["user_id"], bob.id);
    let contents: Vec<Value> = messages(&app, &alice, channel)
        .await
        .iter()
        .map(|m| json!([m["user_id"], m["content"]]))
        .collect();
    assert_eq!(
        contents,
        vec![json!([alice.id, "one"]), json!([bob.id, "one"])]
    );
    assert!(messages(&app, &alice, other).await.is_empty());
}

#[tokio::test]
async fn a_failed_request_frees_its_key_and_a_done_one_replays_its_body() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let channel = app.create_channel(&alice, "general", false).await;
    // A 400, and a 404 found only inside the write (not a member): neither keeps the key.
    let response = post_with_key(&app, &alice, channel, "k", json!({ "content": "  " })).await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_content").await;
    let response = post_with_key(&app, &mallory, channel, "k", json!({ "content": "hi" })).await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    app.join(&mallory, channel).await;
    let response = post_with_key(&app, &mallory, channel, "k", json!({ "content": "hi" })).await;
    expect_json(response, StatusCode::CREATED).await;

    let response = post_with_key(&app, &alice, channel, "k", json!({ "content": "fixed" })).await;
    assert!(!replayed(&response));
    let first = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(first["content"], "fixed");
    let response = post_with_key(&app, &alice, channel, "k", json!({ "content": "fixed" })).await;
    assert!(replayed(&response));
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "a replay is JSON like the first answer"
    );
    assert_eq!(expect_json(response, StatusCode::CREATED).await, first);
    assert_eq!(messages(&app, &alice, channel).await.len(), 2);
}

#[tokio::test]
async fn keys_are_1_to_255_visible_ascii_characters() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    for key in ["", "has space", "caf\u{e9}", &"k".repeat(256)] {
        let response = app
            .client
            .post(app.url(&format!("/api/channels/{channel}/messages")))
            .bearer_auth(&alice.token)
            .header(
                KEY,
                reqwest::header::HeaderValue::from_bytes(key.as_bytes()).unwrap(),
            )
            .json(&json!({ "content": "hi" }))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    }
    let response = app
        .client
        .post(app.url(&format!("/api/channels/{channel}/messages")))
        .bearer_auth(&alice.token)
        .header(KEY, "a")
        .header(KEY, "b")
        .json(&json!({ "content": "hi" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    assert!(messages(&app, &alice, channel).await.is_empty());
    let longest = "~".repeat(255);
    let response = post_with_key(&app, &alice, channel, &longest, json!({ "content": "hi" })).await;
    expect_json(response, StatusCode::CREATED).await;
}

async fn attach(app: &TestApp, user: &TestUser, message_id: i64, key: &str) -> Response {
    let pdf = Upload::new("a.pdf", "application/pdf", fixtures::pdf(500));
    app.attach_files(user, &message_id.to_string(), &[pdf])
        .header(KEY, key)
        .send()
        .await
        .unwrap()
}

async fn post_files_with_key(app: &TestApp, user: &TestUser, channel: i64, key: &str) -> Response {
    let form = Form::new().text("content", "with a file").part(
        "file",
        Part::bytes(fixtures::png(800))
            .file_name("p.png")
            .mime_str("image/png")
            .unwrap(),
    );
    app.client
        .post(app.url(&format!("/api/channels/{channel}/messages")))
        .bearer_auth(&user.token)
        .header(KEY, key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// File rows the database knows (live), and objects in the store.
async fn files_and_objects(app: &TestApp, admin: &TestUser) -> (i64, usize) {
    let status = expect_json(
        app.get("/api/admin/storage-status", &admin.token).await,
        StatusCode::OK,
    )
    .await;
    let store = &app.state.store;
    let objects = store.list(&store.owned_prefix()).await.unwrap();
    (status["object_count"].as_i64().unwrap(), objects.len())
}

#[tokio::test]
async fn five_identical_uploads_with_one_key_store_one_file() {
    // Room for all five at once: the limit is not what is under test.
    let app = spawn_app_with(&[("MAX_CONCURRENT_UPLOADS_PER_USER", "10")]).await;
    let alice = app.register("alice").await;
    app.grant_admin("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let message = app.post_message(&alice, channel, "files follow").await;
    let id = message["id"].as_i64().unwrap();

    let uploads = (0..5).map(|_| attach(&app, &alice, id, "up-1"));
    let first = one_answer(join_all(uploads).await).await;
    assert_eq!(first["files"].as_array().unwrap().len(), 1);
    let listed = messages(&app, &alice, channel).await;
    let files = listed[0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["id"], first["files"][0]["id"]);
    assert_eq!(
        files_and_objects(&app, &alice).await,
        (1, 1),
        "a duplicate stored nothing"
    );

    // A replay after completion; the key for another message is refused.
    let again = attach(&app, &alice, id, "up-1").await;
    assert!(replayed(&again));
    assert_eq!(expect_json(again, StatusCode::CREATED).await, first);
    let other = app.post_message(&alice, channel, "another").await;
    let response = attach(&app, &alice, other["id"].as_i64().unwrap(), "up-1").await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    // A message with files, posted five times at once.
    let posts = (0..5).map(|_| post_files_with_key(&app, &alice, channel, "msg-1"));
    let posted = one_answer(join_all(posts).await).await;
    let listed = messages(&app, &alice, channel).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[2]["id"], posted["id"]);
    assert_eq!(listed[2]["files"].as_array().unwrap().len(), 1);
    assert_eq!(files_and_objects(&app, &alice).await, (2, 2));
}

/// The next `count` `message_created` frames, skipping other frames.
async fn created_frames(ws: &mut WsClient, count: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    while frames.len() < count {
        frames.push(ws.next_of("message_created").await);
    }
    frames
}

#[tokio::test]
async fn a_socket_message_sent_three_times_with_one_client_id_posts_once() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let (mut alice_ws, _) = WsClient::login(&app, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&app, &bob).await;
    let frame =
        json!({ "type": "message", "channel_id": channel, "content": "once", "client_id": "c-1" });
    for _ in 0..3 {
        alice_ws.send(frame.clone()).await;
    }
    // The event every member gets, and two replays to the sender only: the same message.
    let acks = created_frames(&mut alice_ws, 3).await;
    let ids: HashSet<String> = acks.iter().map(|a| a["data"]["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{acks:?}");
    assert!(
        acks.iter().all(|a| a["data"]["client_id"] == "c-1"),
        "{acks:?}"
    );
    assert_eq!(
        acks.iter().filter(|a| a["replayed"] == true).count(),
        2,
        "{acks:?}"
    );
    assert!(acks.iter().all(|a| a["channel_id"] == channel));
    let first = acks.iter().find(|a| a["replayed"].is_null()).unwrap();
    let replay = acks.iter().find(|a| a["replayed"] == true).unwrap();
    assert_eq!(replay["data"], first["data"]);
    let listed = messages(&app, &alice, channel).await;
    assert_eq!(listed.len(), 1, "{listed:?}");

    // The same client_id for other content is refused; bob's "c-1" is his own.
    alice_ws
        .send(json!({ "type": "message", "channel_id": channel, "content": "other", "client_id": "c-1" }))
        .await;
    let error = alice_ws.next_of("error").await;
    assert_eq!(error["code"], "idempotency_key_reused", "{error}");
    assert_eq!(error["client_id"], "c-1");
    bob_ws
        .send(json!({ "type": "message", "channel_id": channel, "content": "bob's", "client_id": "c-1" }))
        .await;
    // Bob saw alice's message once, then his own: no replay reached him.
    let seen = created_frames(&mut bob_ws, 2).await;
    assert_eq!(seen[0]["data"]["id"], first["data"]["id"]);
    assert_eq!(seen[1]["data"]["content"], "bob's");
    assert!(seen[1]["replayed"].is_null());
    assert_eq!(messages(&app, &alice, channel).await.len(), 2);
}

#[tokio::test]
async fn an_abandoned_claim_is_taken_over_and_expired_keys_are_swept() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let path = format!("/api/channels/{channel}/messages");
    // A request that claimed its key, then its instance crashed (nothing releases it).
    let fingerprint = Fingerprint::new("POST", &path).part(b"hi");
    let claimed = chatserver::idempotency::claim(
        &app.state.db,
        alice.id as i32,
        Scope::Http,
        "crashed".into(),
        fingerprint,
    )
    .await
    .unwrap();
    let Outcome::Proceed(claim) = claimed else {
        panic!("a fresh key is claimed");
    };
    std::mem::forget(claim);
    let retry = || post_with_key(&app, &alice, channel, "crashed", json!({ "content": "hi" }));
    expect_error(
        retry().await,
        StatusCode::CONFLICT,
        "idempotency_key_in_flight",
    )
    .await;

    // Backdate: as if the claim were older than the abandonment limit, then the key's TTL.
    let backdate = |by: chrono::TimeDelta| {
        app.state.db.write(move |conn| {
            let rows = diesel::update(idempotency_keys::table)
                .set(idempotency_keys::created_at.eq(chatserver::db::models::now() - by))
                .execute(conn)?;
            Ok(rows)
        })
    };
    backdate(chatserver::idempotency::ABANDONED_AFTER + chrono::TimeDelta::seconds(1))
        .await
        .unwrap();
    let posted = expect_json(retry().await, StatusCode::CREATED).await;
    let again = retry().await;
    assert!(replayed(&again));
    assert_eq!(
        expect_json(again, StatusCode::CREATED).await["id"],
        posted["id"]
    );

    backdate(chatserver::idempotency::KEY_TTL + chrono::TimeDelta::seconds(1))
        .await
        .unwrap();
    // Expired: the key is free again, even before the sweeper runs.
    let response = post_with_key(
        &app,
        &alice,
        channel,
        "crashed",
        json!({ "content": "new" }),
    )
    .await;
    assert!(!replayed(&response));
    expect_json(response, StatusCode::CREATED).await;
    backdate(chatserver::idempotency::KEY_TTL + chrono::TimeDelta::seconds(1))
        .await
        .unwrap();
    let sweeper = chatserver::gc::Sweeper::from(&app.state);
    let report = chatserver::gc::sweep(&sweeper).await.unwrap();
    assert_eq!(report.idempotency_keys_expired, 1);
    let left: i64 = app
        .state
        .db
        .run(|conn| Ok(idempotency_keys::table.count().get_result(conn)?))
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(messages(&app, &alice, channel).await.len(), 2);
}
