//! Read state, mentions and search: counts in the channel list, `read_updated` to the
//! reader's own sockets only, mentions of members recomputed by edits, and search that
//! sees only live things of the caller's channels, whatever the query holds.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixtures::{self, Upload};
use crate::helpers::{TestApp, TestUser, expect_error, expect_json, spawn_app};
use crate::ws::WsClient;

impl TestApp {
    async fn read_up_to(&self, user: &TestUser, channel: i64, message: &Value) -> StatusCode {
        self.post(
            &format!("/api/channels/{channel}/read"),
            &user.token,
            json!({ "message_id": message["id"] }),
        )
        .await
        .status()
    }

    /// `(last_read_id, unread_count, mention_count)` of the channel for `user`.
    async fn read_state(&self, user: &TestUser, channel: i64) -> (i64, i64, i64) {
        let list = expect_json(self.get("/api/channels", &user.token).await, StatusCode::OK).await;
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == channel)
            .unwrap_or_else(|| panic!("channel {channel} not in {list}"))
            .clone();
        (
            entry["last_read_id"].as_i64().unwrap(),
            entry["unread_count"].as_i64().unwrap(),
            entry["mention_count"].as_i64().unwrap(),
        )
    }

    async fn edit_message(&self, user: &TestUser, channel: i64, message: &Value, content: &str) {
        let response = self
            .client
            .patch(self.url(&format!(
                "/api/channels/{channel}/messages/{}",
                message["id"]
            )))
            .bearer_auth(&user.token)
            .json(&json!({ "content": content }))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::OK).await;
    }

    async fn search(&self, user: &TestUser, query: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .get(self.url("/api/search"))
            .query(query)
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::OK).await
    }

    /// The contents of the messages found by `q`, newest first.
    async fn found(&self, user: &TestUser, q: &str) -> Vec<String> {
        contents(&self.search(user, &[("q", q)]).await)
    }
}

fn contents(results: &Value) -> Vec<String> {
    results["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn unread_counts_follow_posts_and_reads_and_never_go_back() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    assert_eq!(app.read_state(&alice, channel).await, (0, 0, 0));
    let first = app.post_message(&bob, channel, "one").await;
    let second = app.post_message(&bob, channel, "two").await;
    let third = app.post_message(&bob, channel, "three @alice").await;
    assert_eq!(app.read_state(&alice, channel).await, (0, 3, 1));
    // The author's own messages are not unread to them.
    assert_eq!(app.read_state(&bob, channel).await, (0, 0, 0));

    let (mut tab_one, _) = WsClient::login(&app, &alice).await;
    let (mut tab_two, _) = WsClient::login(&app, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&app, &bob).await;
    assert_eq!(
        app.read_up_to(&alice, channel, &second).await,
        StatusCode::NO_CONTENT
    );
    for tab in [&mut tab_one, &mut tab_two] {
        let update = tab.next().await;
        assert_eq!(
            update,
            json!({
                "type": "read_updated", "channel_id": channel,
                "data": { "channel_id": channel, "last_read_id": second["id"] },
            })
        );
    }
    bob_ws.assert_quiet().await;
    let second_id = second["id"].as_i64().unwrap();
    assert_eq!(app.read_state(&alice, channel).await, (second_id, 1, 1));

    // Backwards: accepted, changes nothing, announces nothing.
    assert_eq!(
        app.read_up_to(&alice, channel, &first).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.read_state(&alice, channel).await, (second_id, 1, 1));
    tab_one.assert_quiet().await;
    tab_two.assert_quiet().await;

    app.post_message(&alice, channel, "mine").await;
    assert_eq!(app.read_state(&alice, channel).await, (second_id, 1, 1));
    assert_eq!(
        app.read_up_to(&alice, channel, &third).await,
        StatusCode::NO_CONTENT
    );
    let third_id = third["id"].as_i64().unwrap();
    assert_eq!(app.read_state(&alice, channel).await, (third_id, 0, 0));
    assert_eq!(
        tab_two.next_of("read_updated").await["data"]["last_read_id"],
        third_id
    );

    // A message of another channel, a channel of others, no body: refused.
    let other = app.create_channel(&bob, "elsewhere", true).await;
    let elsewhere = app.post_message(&bob, other, "secret").await;
    let response = app
        .post(
            &format!("/api/channels/{channel}/read"),
            &alice.token,
            json!({ "message_id": elsewhere["id"] }),
        )
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .post(
            &format!("/api/channels/{other}/read"),
            &alice.token,
            json!({ "message_id": elsewhere["id"] }),
        )
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .post(
            &format!("/api/channels/{channel}/read"),
            &alice.token,
            json!({}),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn mentions_count_members_only_and_follow_edits_and_deletes() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let carol = app.register("carol").await;

    let message = app
        .post_message(&bob, channel, "hi @alice and @carol, me@bobby.example")
        .await;
    assert_eq!(message["mentions"], json!([alice.id]), "carol is no member");
    assert_eq!(app.read_state(&alice, channel).await.2, 1);

    app.edit_message(&bob, channel, &message, "hi @carol").await;
    assert_eq!(app.read_state(&alice, channel).await, (0, 1, 0));
    app.edit_message(&bob, channel, &message, "sorry @ALICE.")
        .await;
    assert_eq!(app.read_state(&alice, channel).await, (0, 1, 1));
    let listed = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["messages"][0]["mentions"], json!([alice.id]));

    // Reading clears it; a deleted message's mention goes with it.
    assert_eq!(
        app.read_up_to(&alice, channel, &message).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.read_state(&alice, channel).await.2, 0);
    let later = app.post_message(&bob, channel, "@alice again").await;
    assert_eq!(app.read_state(&alice, channel).await.2, 1);
    let response = app
        .delete(
            &format!("/api/channels/{channel}/messages/{}", later["id"]),
            &bob.token,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.read_state(&alice, channel).await,
        (message["id"].as_i64().unwrap(), 0, 0)
    );

    // @channel mentions every member but the author, once a minute.
    app.join(&carol, channel).await;
    let everyone = app.post_message(&bob, channel, "@channel lunch").await;
    assert_eq!(everyone["mentions"], json!([alice.id, carol.id]));
    assert_eq!(app.read_state(&carol, channel).await.2, 1);
    let response = app
        .post(
            &format!("/api/channels/{channel}/messages"),
            &bob.token,
            json!({ "content": "@channel again" }),
        )
        .await;
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Editing the message that already mentions everyone is no new @channel.
    app.edit_message(&bob, channel, &everyone, "@channel lunch at 1")
        .await;
}

#[tokio::test]
async fn search_finds_words_prefixes_any_case_cjk_and_file_names() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    app.post_message(&bob, channel, "The quarterly Report is ready")
        .await;
    app.post_message(&bob, channel, "lunch at noon").await;
    app.post_message(&bob, channel, "今日は会議室で打ち合わせをします")
        .await;
    app.post_message(&bob, channel, "我们明天讨论项目计划")
        .await;

    assert_eq!(
        app.found(&alice, "report").await,
        ["The quarterly Report is ready"]
    );
    assert_eq!(
        app.found(&alice, "REPO").await,
        ["The quarterly Report is ready"]
    );
    assert_eq!(app.found(&alice, "quarterly ready").await.len(), 1);
    assert_eq!(
        app.found(&alice, "quarterly lunch").await.len(),
        0,
        "every word must match"
    );
    assert_eq!(
        app.found(&alice, "会議室").await,
        ["今日は会議室で打ち合わせをします"]
    );
    assert_eq!(
        app.found(&alice, "项目计划").await,
        ["我们明天讨论项目计划"]
    );
    assert_eq!(app.found(&alice, "nothing-like-this").await.len(), 0);

    let response = app
        .post_files(
            &bob,
            channel,
            "",
            &[Upload::new(
                "Budget-Forecast.png",
                "image/png",
                fixtures::png(500),
            )],
        )
        .await;
    let with_file = expect_json(response, StatusCode::CREATED).await;
    let results = app.search(&alice, &[("q", "forecast")]).await;
    assert_eq!(results["messages"], json!([]));
    let files = results["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["file_name"], "Budget-Forecast.png");
    assert_eq!(files[0]["message_id"], with_file["id"]);
    assert!(files[0]["url"].as_str().unwrap().starts_with("http"));

    // Bad queries.
    for bad in ["", "   ", &"x".repeat(257), "a b", "\" * ("] {
        let response = app
            .client
            .get(app.url("/api/search"))
            .query(&[("q", bad)])
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let response = app.get("/api/search", &alice.token).await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn search_follows_edits_deletes_and_membership() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let message = app.post_message(&bob, channel, "meet at the harbour").await;
    app.edit_message(&bob, channel, &message, "meet at the lighthouse")
        .await;
    assert_eq!(
        app.found(&alice, "lighthouse").await,
        ["meet at the lighthouse"]
    );
    assert_eq!(
        app.found(&alice, "harbour").await.len(),
        0,
        "old words are gone"
    );

    let doomed = app.post_message(&bob, channel, "zeppelin plans").await;
    let response = app
        .post_files(
            &bob,
            channel,
            "zeppelin drawing",
            &[Upload::new("zeppelin.png", "image/png", fixtures::png(400))],
        )
        .await;
    let drawing = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(app.found(&alice, "zeppelin").await.len(), 2);
    for message in [&doomed, &drawing] {
        let response = app
            .delete(
                &format!("/api/channels/{channel}/messages/{}", message["id"]),
                &bob.token,
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let results = app.search(&alice, &[("q", "zeppelin")]).await;
    assert_eq!(
        (results["messages"].clone(), results["files"].clone()),
        (json!([]), json!([]))
    );

    // A private channel alice is not in, and one she left: never searched.
    let private = app.create_channel(&bob, "private", true).await;
    app.post_message(&bob, private, "walrus secrets").await;
    let left = app.create_channel(&bob, "left", false).await;
    app.join(&alice, left).await;
    app.post_message(&bob, left, "walrus gossip").await;
    assert_eq!(app.found(&alice, "walrus").await, ["walrus gossip"]);
    let response = app
        .delete(&format!("/api/channels/{left}/members/me"), &alice.token)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.found(&alice, "walrus").await.len(), 0);
    let by_channel = app
        .search(
            &alice,
            &[("q", "walrus"), ("channel_id", &private.to_string())],
        )
        .await;
    assert_eq!(by_channel["messages"], json!([]));
    assert_eq!(app.found(&bob, "walrus").await.len(), 2);
}

#[tokio::test]
async fn hostile_queries_are_only_words() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    app.post_message(
        &bob,
        channel,
        "near the river OR the sea, it's \"quoted\" C:\\path",
    )
    .await;
    app.post_message(&bob, channel, "unrelated").await;
    for q in [
        "\"river",
        "river*",
        "NEAR(river sea)",
        "river OR unrelated",
        "river's",
        "C:\\path",
        "\"quoted\"",
        "'; DROP TABLE messages; --river",
        "river AND NOT sea",
        "{river} ^sea",
        "%river_",
    ] {
        let found = app.found(&alice, q).await;
        assert!(
            found.len() <= 1 && found.iter().all(|c| c.starts_with("near the river")),
            "{q:?} found {found:?}"
        );
    }
    assert_eq!(app.found(&alice, "NEAR(river sea)").await.len(), 1);
    assert_eq!(app.found(&alice, "\"quoted\"").await.len(), 1);
    assert_eq!(
        app.found(&alice, "river OR unrelated").await.len(),
        0,
        "OR is a word"
    );
    assert_eq!(app.found(&alice, "unrelated").await, ["unrelated"]);
}

#[tokio::test]
async fn search_pages_without_repeats_and_around_centres_on_a_hit() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let mut posted = Vec::new();
    for i in 0..13 {
        let content = if i % 3 == 0 {
            format!("filler {i}")
        } else {
            format!("needle {i}")
        };
        posted.push(app.post_message(&bob, channel, &content).await);
    }
    let response = app
        .post_files(
            &bob,
            channel,
            "needle with files",
            &[
                Upload::new("needle-a.png", "image/png", fixtures::png(300)),
                Upload::new("needle-b.png", "image/png", fixtures::png(301)),
            ],
        )
        .await;
    expect_json(response, StatusCode::CREATED).await;
    // 8 + 1 messages and 2 files: 11 hits.
    let mut seen: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("q", "needle".to_owned()), ("limit", "3".to_owned())];
        if let Some(before) = &before {
            query.push(("before", before.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = app.search(&alice, &query).await;
        pages += 1;
        let mut keys = Vec::new();
        for m in page["messages"].as_array().unwrap() {
            seen.push(format!("m{}", m["id"]));
            keys.push(m["id"].as_i64().unwrap());
        }
        for f in page["files"].as_array().unwrap() {
            seen.push(format!("f{}", f["id"]));
            keys.push(f["message_id"].as_i64().unwrap());
        }
        let ids: Vec<i64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        if !page["has_more"].as_bool().unwrap() {
            assert_eq!(page["next_before"], Value::Null);
            break;
        }
        assert_eq!(page["next_before"].as_i64(), keys.iter().min().copied());
        before = Some(page["next_before"].to_string());
        assert!(pages < 20, "paging does not end");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "repeats in {seen:?}");
    assert_eq!(seen.len(), 11, "{seen:?}");

    // Jump to a hit: the page around it.
    let target = &posted[6];
    let page = expect_json(
        app.get(
            &format!(
                "/api/channels/{channel}/messages?around={}&limit=5",
                target["id"]
            ),
            &alice.token,
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
    let expected: Vec<i64> = posted[4..9]
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(
        (page["has_more"].clone(), page["has_newer"].clone()),
        (json!(true), json!(true))
    );
    let first = expect_json(
        app.get(
            &format!(
                "/api/channels/{channel}/messages?around={}&limit=4",
                posted[0]["id"]
            ),
            &alice.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["messages"].as_array().unwrap().len(), 4);
    assert_eq!(first["messages"][0]["id"], posted[0]["id"]);
    assert_eq!(first["has_more"], false);
    let response = app
        .get(
            &format!("/api/channels/{channel}/messages?around=999999"),
            &alice.token,
        )
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .get(
            &format!(
                "/api/channels/{channel}/messages?around={}&before=3",
                target["id"]
            ),
            &alice.token,
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}

/// A user's tabs on two instances agree: `read_updated` crosses Redis to the reader's
/// sockets there, and to nobody else's.
#[tokio::test]
async fn read_updated_reaches_the_readers_sockets_on_other_instances() {
    let Some(redis) = crate::redis::TestRedis::start(
        "read_updated_reaches_the_readers_sockets_on_other_instances",
    )
    .await
    else {
        return;
    };
    let redis_channel = format!("chatserver-test:{}", uuid::Uuid::new_v4().simple());
    let settings = [
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_CHANNEL", redis_channel.as_str()),
    ];
    let one = crate::helpers::spawn_app_with(&settings).await;
    let two = one.spawn_peer(&[]).await;
    let (alice, bob, channel) = one.two_members().await;
    let (mut here, _) = WsClient::login(&one, &alice).await;
    let (mut there, _) = WsClient::login(&two, &alice).await;
    let (mut bob_there, _) = WsClient::login(&two, &bob).await;
    // Until an event crosses, instance two's subscription may not be up: post until one does.
    let mut crossed = None;
    for attempt in 0..50 {
        let message = one
            .post_message(&bob, channel, &format!("warm-up {attempt}"))
            .await;
        assert_eq!(
            here.next_of("message_created").await["data"]["id"],
            message["id"]
        );
        let next = tokio::time::timeout(std::time::Duration::from_millis(200), there.next()).await;
        if next.is_ok() {
            crossed = Some(message);
            break;
        }
    }
    let last = crossed.expect("an event crossed through Redis");
    // Drain what bob's socket got (the warm-ups that crossed).
    while !bob_there.frames_before_pong().await.is_empty() {}
    while !there.frames_before_pong().await.is_empty() {}

    assert_eq!(
        one.read_up_to(&alice, channel, &last).await,
        StatusCode::NO_CONTENT
    );
    for socket in [&mut here, &mut there] {
        let update = socket.next_of("read_updated").await;
        assert_eq!(update["data"]["last_read_id"], last["id"]);
    }
    bob_there.assert_quiet().await;
    assert_eq!(two.read_state(&alice, channel).await.1, 0);
}
