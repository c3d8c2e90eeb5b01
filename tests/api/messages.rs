use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, expect_error, expect_json, recv_within, spawn_app};

async fn page(app: &TestApp, user: &TestUser, channel: i64, query: &str) -> (Vec<i64>, bool) {
    let response = app
        .get(
            &format!("/api/channels/{channel}/messages?{query}"),
            &user.token,
        )
        .await;
    let body = expect_json(response, StatusCode::OK).await;
    let ids = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    (ids, body["has_more"].as_bool().unwrap())
}

#[tokio::test]
async fn a_posted_message_has_the_contract_shape() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let mut events = app.events().await;
    let message = app
        .post_message(&alice, channel, "hello <b>world</b>")
        .await;
    assert!(message["id"].is_i64());
    assert_eq!(message["channel_id"], channel);
    assert_eq!(message["user_id"], alice.id);
    assert_eq!(message["username"], "alice");
    assert_eq!(message["content"], "hello <b>world</b>");
    assert_eq!(message["files"], json!([]));
    assert!(message["created_at"].as_str().unwrap().ends_with('Z'));

    let (ids, has_more) = page(&app, &alice, channel, "").await;
    assert_eq!(ids, vec![message["id"].as_i64().unwrap()]);
    assert!(!has_more);

    let event = app.render(&recv_within(&mut events, "message_created").await, &alice);
    assert_eq!(event["type"], "message_created");
    assert_eq!(event["data"]["id"], message["id"]);
}

#[tokio::test]
async fn content_must_be_1_to_4000_characters() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let path = format!("/api/channels/{channel}/messages");
    for content in [
        String::new(),
        "   \n ".into(),
        "x".repeat(4001),
        "\u{e9}".repeat(4001),
    ] {
        let response = app
            .post(&path, &alice.token, json!({ "content": content }))
            .await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_content").await;
    }
    let response = app.post(&path, &alice.token, json!({})).await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    // 4000 characters (not bytes) is fine.
    app.post_message(&alice, channel, &"\u{e9}".repeat(4000))
        .await;
    let (ids, _) = page(&app, &alice, channel, "").await;
    assert_eq!(ids.len(), 1, "only the valid message was stored");
}

#[tokio::test]
async fn non_members_cannot_read_or_post() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let public = app.create_channel(&alice, "public", false).await;
    let private = app.create_channel(&alice, "private", true).await;
    for channel in [public, private, 424242] {
        let path = format!("/api/channels/{channel}/messages");
        expect_error(
            app.get(&path, &mallory.token).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let post = app
            .post(&path, &mallory.token, json!({ "content": "hi" }))
            .await;
        expect_error(post, StatusCode::NOT_FOUND, "not_found").await;
    }
    let (ids, _) = page(&app, &alice, public, "").await;
    assert!(ids.is_empty());
}

#[tokio::test]
async fn bad_paging_parameters_are_400() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    for query in ["limit=0", "limit=-5", "limit=abc", "before=xyz"] {
        let response = app
            .get(
                &format!("/api/channels/{channel}/messages?{query}"),
                &alice.token,
            )
            .await;
        expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn pagination_covers_history_in_both_directions_without_gaps_or_duplicates() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let noise = app.create_channel(&alice, "noise", false).await;
    let mut posted = Vec::new();
    for i in 0..300 {
        let message = app
            .post_message(&alice, channel, &format!("message {i}"))
            .await;
        posted.push(message["id"].as_i64().unwrap());
        if i % 50 == 0 {
            app.post_message(&alice, noise, "elsewhere").await;
        }
    }

    // Default: the newest 50, ascending.
    let (newest, has_more) = page(&app, &alice, channel, "").await;
    assert_eq!(newest, posted[250..]);
    assert!(has_more);
    // The limit is capped at 100.
    let (capped, _) = page(&app, &alice, channel, "limit=1000").await;
    assert_eq!(capped.len(), 100);

    // Backwards with `before`, as a client scrolling up.
    let mut backwards: Vec<i64> = Vec::new();
    let (mut ids, mut more) = page(&app, &alice, channel, "limit=37").await;
    loop {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "each page ascends");
        backwards.splice(0..0, ids.iter().copied());
        if !more {
            break;
        }
        (ids, more) = page(
            &app,
            &alice,
            channel,
            &format!("limit=37&before={}", ids[0]),
        )
        .await;
    }
    assert_eq!(backwards, posted);

    // Forwards with `after`, as a client catching up.
    let mut forwards: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let (ids, more) = page(&app, &alice, channel, &format!("limit=41&after={after}")).await;
        forwards.extend(&ids);
        if !more {
            break;
        }
        after = *ids.last().unwrap();
    }
    assert_eq!(forwards, posted);
    let unique: HashSet<i64> = forwards.iter().copied().collect();
    assert_eq!(unique.len(), 300);

    // A window between two ids.
    let (window, more) = page(
        &app,
        &alice,
        channel,
        &format!("after={}&before={}&limit=100", posted[9], posted[20]),
    )
    .await;
    assert_eq!(window, posted[10..20]);
    assert!(!more);
    // Past the end.
    let (empty, more) = page(&app, &alice, channel, &format!("after={}", posted[299])).await;
    assert!(empty.is_empty() && !more);
}

#[tokio::test]
async fn messages_carry_the_author_username() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let channel = app.create_channel(&alice, "general", false).await;
    app.post(
        &format!("/api/channels/{channel}/join"),
        &bob.token,
        json!({}),
    )
    .await;
    app.post_message(&alice, channel, "from alice").await;
    app.post_message(&bob, channel, "from bob").await;
    let body: Value = app
        .get(&format!("/api/channels/{channel}/messages"), &bob.token)
        .await
        .json()
        .await
        .unwrap();
    let authors: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(authors, ["alice", "bobby"]);
}
