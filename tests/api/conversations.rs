//! Conversations: edits, deletes, threads, reactions, direct messages, display names and
//! the public settings. Every change is checked at another member's socket too, in order.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixtures::{self, Upload};
use crate::helpers::{
    TestApp, TestUser, eventually, expect_error, expect_json, spawn_app, spawn_app_with,
};
use crate::ws::WsClient;

fn message_path(channel: i64, message: &Value) -> String {
    format!("/api/channels/{channel}/messages/{}", message["id"])
}

/// Every byte but ASCII letters and digits percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn reaction_path(channel: i64, message: &Value, emoji: &str) -> String {
    format!(
        "{}/reactions/{}",
        message_path(channel, message),
        encode(emoji)
    )
}

impl TestApp {
    async fn patch(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn put(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn reply(&self, user: &TestUser, channel: i64, root: &Value, content: &str) -> Value {
        let response = self
            .post(
                &format!("/api/channels/{channel}/messages"),
                &user.token,
                json!({ "content": content, "thread_id": root["id"] }),
            )
            .await;
        expect_json(response, StatusCode::CREATED).await
    }

    async fn listing(&self, user: &TestUser, path: &str) -> (Vec<Value>, bool) {
        let body = expect_json(self.get(path, &user.token).await, StatusCode::OK).await;
        (
            body["messages"].as_array().unwrap().clone(),
            body["has_more"].as_bool().unwrap(),
        )
    }
}

fn ids(messages: &[Value]) -> Vec<i64> {
    messages.iter().map(|m| m["id"].as_i64().unwrap()).collect()
}

/// The next frames' types, in order (skipping `typing`), and the frames.
async fn next_events(socket: &mut WsClient, count: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    while frames.len() < count {
        let frame = socket.next().await;
        if frame["type"] != "typing" {
            frames.push(frame);
        }
    }
    frames
}

fn types(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_message_has_the_new_fields() {
    let app = spawn_app().await;
    let (alice, _, channel) = app.two_members().await;
    let message = app.post_message(&alice, channel, "hello").await;
    assert_eq!(message["edited_at"], Value::Null);
    assert_eq!(message["thread_id"], Value::Null);
    assert_eq!(message["reply_count"], 0);
    assert_eq!(message["last_reply_at"], Value::Null);
    assert_eq!(message["reactions"], json!([]));
    assert_eq!(message["display_name"], "alice");
}

#[tokio::test]
async fn only_the_author_edits_and_edited_at_is_set() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let message = app.post_message(&alice, channel, "frist").await;
    let (mut socket, _) = WsClient::login(&app, &bob).await;
    let path = message_path(channel, &message);

    let response = app
        .patch(&path, &bob.token, json!({ "content": "mine now" }))
        .await;
    expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    for bad in ["", "  \n", &"x".repeat(4001)] {
        let response = app
            .patch(&path, &alice.token, json!({ "content": bad }))
            .await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_content").await;
    }
    let response = app.patch(&path, &alice.token, json!({})).await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;

    let response = app
        .patch(&path, &alice.token, json!({ "content": "first" }))
        .await;
    let edited = expect_json(response, StatusCode::OK).await;
    assert_eq!(edited["id"], message["id"]);
    assert_eq!(edited["content"], "first");
    assert!(edited["edited_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(edited["created_at"], message["created_at"]);

    let (listed, _) = app
        .listing(&alice, &format!("/api/channels/{channel}/messages"))
        .await;
    assert_eq!(listed[0]["content"], "first");
    assert_eq!(listed[0]["edited_at"], edited["edited_at"]);

    // Refused edits announced nothing; the edit exactly one `message_updated`.
    let frames = next_events(&mut socket, 1).await;
    assert_eq!(types(&frames), ["message_updated"]);
    assert_eq!(frames[0]["channel_id"], channel);
    assert_eq!(frames[0]["data"]["content"], "first");
    assert_eq!(frames[0]["data"]["edited_at"], edited["edited_at"]);
    socket.assert_quiet().await;

    // Another channel's path, or an unknown id: 404.
    let other = app.create_channel(&alice, "other", false).await;
    let response = app
        .patch(
            &message_path(other, &message),
            &alice.token,
            json!({ "content": "x" }),
        )
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .patch(
            &format!("/api/channels/{channel}/messages/999999"),
            &alice.token,
            json!({ "content": "x" }),
        )
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_deleted_message_takes_its_files_and_is_gone_everywhere() {
    let app = spawn_app_with(&[("FILE_PURGE_AFTER_SECONDS", "0")]).await;
    let (alice, bob, channel) = app.two_members().await;
    let kept = app.post_message(&alice, channel, "kept").await;
    let message = expect_json(
        app.post_files(
            &alice,
            channel,
            "two files",
            &[
                Upload::new("a.png", "image/png", fixtures::png(1000)),
                Upload::new("b.pdf", "application/pdf", fixtures::pdf(1000)),
            ],
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let file_ids: Vec<i64> = message["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(file_ids.len(), 2);
    let (mut socket, _) = WsClient::login(&app, &bob).await;
    let path = message_path(channel, &message);

    expect_error(
        app.delete(&path, &bob.token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.delete(&path, &alice.token).await.status(),
        StatusCode::NO_CONTENT
    );

    let frames = next_events(&mut socket, 3).await;
    assert_eq!(
        types(&frames),
        ["file_deleted", "file_deleted", "message_deleted"]
    );
    for (frame, id) in frames.iter().zip(&file_ids) {
        assert_eq!(frame["data"]["id"], *id);
        assert_eq!(frame["data"]["message_id"], message["id"]);
    }
    assert_eq!(
        frames[2]["data"],
        json!({ "id": message["id"], "channel_id": channel, "thread_id": null })
    );
    socket.assert_quiet().await;

    // Gone from the listing and from every route.
    let (listed, _) = app
        .listing(&alice, &format!("/api/channels/{channel}/messages"))
        .await;
    assert_eq!(ids(&listed), [kept["id"].as_i64().unwrap()]);
    for id in &file_ids {
        let response = app.get(&format!("/api/files/{id}"), &alice.token).await;
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    expect_error(
        app.delete(&path, &alice.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let response = app
        .patch(&path, &alice.token, json!({ "content": "back?" }))
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(
        app.put(&reaction_path(channel, &message, "👍"), &alice.token)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let response = app.get(&format!("{path}/thread"), &alice.token).await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .post(
            &format!("/api/channels/{channel}/messages"),
            &alice.token,
            json!({ "content": "reply", "thread_id": message["id"] }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;

    // The sweeper purges the objects, as for deleted files.
    let mut purged = 0;
    let swept = eventually(async || {
        purged += chatserver::gc::sweep(&(&app.state).into())
            .await
            .unwrap()
            .purged;
        purged == 2
    })
    .await;
    assert!(swept, "purged {purged} of 2 objects");
}

#[tokio::test]
async fn replies_live_in_their_thread() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let root = app.post_message(&alice, channel, "root").await;
    let other_root = app.post_message(&alice, channel, "other").await;
    let (mut socket, _) = WsClient::login(&app, &alice).await;

    let mut replies = Vec::new();
    for i in 0..5 {
        let reply = app.reply(&bob, channel, &root, &format!("reply {i}")).await;
        assert_eq!(reply["thread_id"], root["id"]);
        assert_eq!(reply["display_name"], "bobby");
        let frames = next_events(&mut socket, 2).await;
        assert_eq!(types(&frames), ["message_created", "message_updated"]);
        assert_eq!(frames[0]["data"]["id"], reply["id"]);
        assert_eq!(frames[0]["data"]["thread_id"], root["id"]);
        assert_eq!(frames[1]["data"]["id"], root["id"]);
        assert_eq!(frames[1]["data"]["reply_count"], i + 1);
        assert_eq!(frames[1]["data"]["last_reply_at"], reply["created_at"]);
        replies.push(reply);
    }
    let reply_ids = ids(&replies);

    // The channel listing holds top-level messages only, with their counts.
    let (listed, _) = app
        .listing(&alice, &format!("/api/channels/{channel}/messages"))
        .await;
    assert_eq!(
        ids(&listed),
        [
            root["id"].as_i64().unwrap(),
            other_root["id"].as_i64().unwrap()
        ]
    );
    assert_eq!(listed[0]["reply_count"], 5);
    assert_eq!(listed[0]["last_reply_at"], replies[4]["created_at"]);
    assert_eq!(listed[1]["reply_count"], 0);
    let (listed, _) = app
        .listing(
            &alice,
            &format!("/api/channels/{channel}/messages?after={}", root["id"]),
        )
        .await;
    assert_eq!(ids(&listed), [other_root["id"].as_i64().unwrap()]);

    // The thread, ascending, in keyset pages.
    let thread = format!("{}/thread", message_path(channel, &root));
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (page, has_more) = app.listing(&bob, &format!("{thread}?limit=2{after}")).await;
        assert!(page.len() <= 2);
        seen.extend(ids(&page));
        if !has_more {
            break;
        }
        after = format!("&after={}", seen.last().unwrap());
    }
    assert_eq!(seen, reply_ids);
    let (page, has_more) = app.listing(&bob, &thread).await;
    assert_eq!((ids(&page), has_more), (reply_ids.clone(), false));
    let response = app.get(&format!("{thread}?limit=0"), &bob.token).await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;

    // No thread of a thread; no thread in another channel or of nothing.
    let reply_as_root = replies[0].clone();
    for thread_id in [reply_as_root["id"].clone(), json!(999_999)] {
        let response = app
            .post(
                &format!("/api/channels/{channel}/messages"),
                &bob.token,
                json!({ "content": "nested", "thread_id": thread_id }),
            )
            .await;
        expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let elsewhere = app.create_channel(&alice, "elsewhere", false).await;
    let response = app
        .post(
            &format!("/api/channels/{elsewhere}/messages"),
            &alice.token,
            json!({ "content": "cross", "thread_id": root["id"] }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app
        .get(
            &format!("{}/thread", message_path(channel, &reply_as_root)),
            &bob.token,
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    // (The elsewhere channel's creation reached alice's socket.)
    assert_eq!(
        next_events(&mut socket, 1).await[0]["type"],
        "member_joined"
    );
    socket.assert_quiet().await;

    // Deleting the newest reply: the root's count and last reply follow.
    let newest = &replies[4];
    assert_eq!(
        app.delete(&message_path(channel, newest), &bob.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let frames = next_events(&mut socket, 2).await;
    assert_eq!(types(&frames), ["message_deleted", "message_updated"]);
    assert_eq!(
        frames[0]["data"],
        json!({ "id": newest["id"], "channel_id": channel, "thread_id": root["id"] })
    );
    assert_eq!(frames[1]["data"]["reply_count"], 4);
    assert_eq!(frames[1]["data"]["last_reply_at"], replies[3]["created_at"]);
    let (page, _) = app.listing(&bob, &thread).await;
    assert_eq!(ids(&page), reply_ids[..4]);

    // Deleting the root takes its thread.
    assert_eq!(
        app.delete(&message_path(channel, &root), &alice.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let frames = next_events(&mut socket, 5).await;
    assert_eq!(types(&frames), ["message_deleted"; 5]);
    let deleted: Vec<i64> = frames
        .iter()
        .map(|f| f["data"]["id"].as_i64().unwrap())
        .collect();
    let mut expected = reply_ids[..4].to_vec();
    expected.push(root["id"].as_i64().unwrap());
    assert_eq!(deleted, expected);
    let response = app.get(&thread, &bob.token).await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .patch(
            &message_path(channel, &replies[0]),
            &bob.token,
            json!({ "content": "x" }),
        )
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn reactions_are_idempotent_counted_and_bounded() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let message = app.post_message(&alice, channel, "react to me").await;
    let (mut socket, _) = WsClient::login(&app, &bob).await;
    let thumbs = reaction_path(channel, &message, "👍");

    for _ in 0..2 {
        assert_eq!(
            app.put(&thumbs, &alice.token).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(
        app.put(&thumbs, &bob.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let family = "👨‍👩‍👧‍👦";
    assert_eq!(
        app.put(&reaction_path(channel, &message, family), &bob.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let (listed, _) = app
        .listing(&alice, &format!("/api/channels/{channel}/messages"))
        .await;
    assert_eq!(
        listed[0]["reactions"],
        json!([
            { "emoji": "👍", "count": 2, "user_ids": [alice.id, bob.id] },
            { "emoji": family, "count": 1, "user_ids": [bob.id] },
        ])
    );

    // Removing: idempotent too.
    for _ in 0..2 {
        assert_eq!(
            app.delete(&thumbs, &alice.token).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let (listed, _) = app
        .listing(&alice, &format!("/api/channels/{channel}/messages"))
        .await;
    assert_eq!(listed[0]["reactions"][0]["user_ids"], json!([bob.id]));

    // One event per change, none for repeats.
    let frames = next_events(&mut socket, 4).await;
    assert_eq!(
        types(&frames),
        [
            "reaction_added",
            "reaction_added",
            "reaction_added",
            "reaction_removed"
        ]
    );
    assert_eq!(
        frames[0]["data"],
        json!({
            "message_id": message["id"], "channel_id": channel, "emoji": "👍",
            "user_id": alice.id, "display_name": "alice",
        })
    );
    assert_eq!(frames[1]["data"]["user_id"], bob.id);
    assert_eq!(frames[2]["data"]["emoji"], family);
    assert_eq!(frames[3]["data"]["user_id"], alice.id);
    socket.assert_quiet().await;

    // Not one emoji: 400.
    let long = "x".repeat(300);
    for bad in ["a", "👍👍", "", long.as_str(), "👍 ", "🇫", ":+1:"] {
        let path = reaction_path(channel, &message, bad);
        expect_error(
            app.put(&path, &alice.token).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
        expect_error(
            app.delete(&path, &alice.token).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }

    // At most 20 different emoji on a message; existing ones may still be added to.
    let emoji: Vec<String> = (0x1F600..0x1F612)
        .map(|c| char::from_u32(c).unwrap().to_string())
        .collect();
    for e in &emoji {
        let path = reaction_path(channel, &message, e);
        assert_eq!(
            app.put(&path, &alice.token).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let response = app
        .put(&reaction_path(channel, &message, "🎉"), &alice.token)
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "too_many_reactions").await;
    assert_eq!(
        app.put(&reaction_path(channel, &message, &emoji[0]), &bob.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let (listed, _) = app
        .listing(&alice, &format!("/api/channels/{channel}/messages"))
        .await;
    let reactions = listed[0]["reactions"].as_array().unwrap();
    assert_eq!(reactions.len(), 20);
    assert_eq!(reactions[2]["count"], 2);
    // Everything arrived, in order.
    let frames = next_events(&mut socket, 19).await;
    assert!(frames.iter().all(|f| f["type"] == "reaction_added"));
    assert_eq!(frames[18]["data"]["user_id"], bob.id);
    socket.assert_quiet().await;
}

#[tokio::test]
async fn non_members_get_404_everywhere() {
    let app = spawn_app().await;
    let (alice, _, channel) = app.two_members().await;
    let carol = app.register("carol").await;
    let root = app.post_message(&alice, channel, "root").await;
    let reply = app.reply(&alice, channel, &root, "reply").await;
    let path = message_path(channel, &root);
    let reaction = reaction_path(channel, &root, "👍");
    let responses = [
        app.patch(&path, &carol.token, json!({ "content": "x" }))
            .await,
        app.delete(&path, &carol.token).await,
        app.get(&format!("{path}/thread"), &carol.token).await,
        app.put(&reaction, &carol.token).await,
        app.delete(&reaction, &carol.token).await,
        app.post(
            &format!("/api/channels/{channel}/messages"),
            &carol.token,
            json!({ "content": "x", "thread_id": root["id"] }),
        )
        .await,
        app.delete(&message_path(channel, &reply), &carol.token)
            .await,
    ];
    for response in responses {
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Nothing changed.
    let (listed, _) = app
        .listing(&alice, &format!("/api/channels/{channel}/messages"))
        .await;
    assert_eq!(listed[0]["reply_count"], 1);
    assert_eq!(listed[0]["reactions"], json!([]));
}

#[tokio::test]
async fn the_socket_edits_deletes_reacts_and_replies() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let root = app.post_message(&alice, channel, "root").await;
    let theirs = app.post_message(&bob, channel, "bob's").await;
    let (mut writer, _) = WsClient::login(&app, &alice).await;
    let (mut reader, _) = WsClient::login(&app, &bob).await;

    writer
        .send(json!({ "type": "message", "channel_id": channel, "content": "a reply", "thread_id": root["id"] }))
        .await;
    writer
        .send(json!({ "type": "edit", "channel_id": channel, "message_id": root["id"], "content": "edited" }))
        .await;
    writer
        .send(json!({ "type": "react", "channel_id": channel, "message_id": root["id"], "emoji": "🔥" }))
        .await;
    writer
        .send(json!({ "type": "unreact", "channel_id": channel, "message_id": root["id"], "emoji": "🔥" }))
        .await;
    let frames = next_events(&mut reader, 5).await;
    assert_eq!(
        types(&frames),
        [
            "message_created",
            "message_updated",
            "message_updated",
            "reaction_added",
            "reaction_removed"
        ]
    );
    let reply_id = frames[0]["data"]["id"].clone();
    assert_eq!(frames[0]["data"]["thread_id"], root["id"]);
    assert_eq!(frames[1]["data"]["reply_count"], 1);
    assert_eq!(frames[2]["data"]["content"], "edited");

    writer
        .send(json!({ "type": "delete", "channel_id": channel, "message_id": reply_id }))
        .await;
    let frames = next_events(&mut reader, 2).await;
    assert_eq!(types(&frames), ["message_deleted", "message_updated"]);
    assert_eq!(frames[0]["data"]["thread_id"], root["id"]);
    assert_eq!(frames[1]["data"]["reply_count"], 0);

    // Refusals are error frames; the socket stays open.
    writer
        .send(json!({ "type": "edit", "channel_id": channel, "message_id": theirs["id"], "content": "x" }))
        .await;
    writer
        .send(json!({ "type": "react", "channel_id": channel, "message_id": root["id"], "emoji": "a" }))
        .await;
    writer
        .send(json!({ "type": "delete", "channel_id": channel, "message_id": reply_id }))
        .await;
    let mut codes = Vec::new();
    while codes.len() < 3 {
        let frame = writer.next().await;
        if frame["type"] == "error" {
            codes.push(frame["code"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(codes, ["forbidden", "bad_request", "not_found"]);
    reader.assert_quiet().await;
}

#[tokio::test]
async fn a_direct_message_is_one_private_channel_per_pair() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let carol = app.register("carol").await;
    let (mut bob_socket, _) = WsClient::login(&app, &bob).await;

    let response = app
        .post("/api/dms", &alice.token, json!({ "username": "bobby" }))
        .await;
    let dm = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(dm["kind"], "dm");
    assert_eq!(dm["is_private"], true);
    let id = dm["id"].as_i64().unwrap();
    // Bob's open socket follows it at once: his join is its first event there (alice's,
    // the smaller id, came before he followed it).
    let joined = bob_socket.next().await;
    assert_eq!(joined["type"], "member_joined");
    assert_eq!(joined["channel_id"], id);
    assert_eq!(joined["data"]["user"]["username"], "bobby");

    for (user, other) in [(&alice, "bobby"), (&bob, "alice")] {
        let response = app
            .post("/api/dms", &user.token, json!({ "username": other }))
            .await;
        assert_eq!(expect_json(response, StatusCode::OK).await["id"], id);
    }
    let message = app.post_message(&bob, id, "psst").await;
    let frame = bob_socket.next_of("message_created").await;
    assert_eq!(frame["data"]["id"], message["id"]);

    // Listed with the caller's channels, not with the public ones.
    for user in [&alice, &bob] {
        let mine = expect_json(app.get("/api/channels", &user.token).await, StatusCode::OK).await;
        let dms: Vec<&Value> = mine
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "dm")
            .collect();
        assert_eq!(dms.len(), 1);
        assert_eq!(dms[0]["id"], id);
    }
    let general = app.create_channel(&alice, "general", false).await;
    let public = expect_json(
        app.get("/api/channels/public", &carol.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(public.as_array().unwrap().len(), 1);
    assert_eq!(public[0]["id"], general);
    assert_eq!(public[0]["kind"], "channel");

    // Nobody joins, is added or leaves; outsiders see nothing.
    let response = app
        .post(&format!("/api/channels/{id}/join"), &carol.token, json!({}))
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .post(
            &format!("/api/channels/{id}/members"),
            &alice.token,
            json!({ "username": "carol" }),
        )
        .await;
    expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app
        .delete(&format!("/api/channels/{id}/members/me"), &bob.token)
        .await;
    expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app
        .get(&format!("/api/channels/{id}/messages"), &carol.token)
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let members = expect_json(
        app.get(&format!("/api/channels/{id}/members"), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(members.as_array().unwrap().len(), 2);

    // Oneself, or nobody.
    let response = app
        .post("/api/dms", &alice.token, json!({ "username": "alice" }))
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app
        .post("/api/dms", &alice.token, json!({ "username": "nobody" }))
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn both_users_creating_a_dm_at_once_get_one_channel() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let (mut alice_socket, _) = WsClient::login(&app, &alice).await;
    let open = |user: &TestUser, other: &'static str| {
        let request = app
            .client
            .post(app.url("/api/dms"))
            .bearer_auth(&user.token)
            .json(&json!({ "username": other }));
        async move { request.send().await.unwrap() }
    };
    let mut calls = Vec::new();
    for _ in 0..4 {
        calls.push(open(&alice, "bobby"));
        calls.push(open(&bob, "alice"));
    }
    let responses = futures_util::future::join_all(calls).await;
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for response in responses {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status}: {body}"
        );
        created += usize::from(status == StatusCode::CREATED);
        ids.insert(body["id"].as_i64().unwrap());
    }
    assert_eq!(created, 1, "exactly one request created the channel");
    assert_eq!(ids.len(), 1, "one channel: {ids:?}");
    // Its two memberships were announced once each, alice's (the smaller id) first.
    let frames = next_events(&mut alice_socket, 2).await;
    assert_eq!(types(&frames), ["member_joined", "member_joined"]);
    assert_eq!(frames[0]["data"]["user"]["id"], alice.id);
    assert_eq!(frames[1]["data"]["user"]["id"], bob.id);
    alice_socket.assert_quiet().await;
}

#[tokio::test]
async fn users_change_their_display_name() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let message = app.post_message(&alice, channel, "hi").await;
    assert_eq!(message["display_name"], "alice");

    let response = app
        .patch(
            "/api/me",
            &alice.token,
            json!({ "display_name": "  Rene\u{301}e  " }),
        )
        .await;
    let user = expect_json(response, StatusCode::OK).await;
    assert_eq!(user["display_name"], "Ren\u{e9}e");
    assert_eq!(user["username"], "alice");
    let me = expect_json(app.get("/api/me", &alice.token).await, StatusCode::OK).await;
    assert_eq!(me["display_name"], "Ren\u{e9}e");
    let (listed, _) = app
        .listing(&bob, &format!("/api/channels/{channel}/messages"))
        .await;
    assert_eq!(listed[0]["display_name"], "Ren\u{e9}e");

    for bad in [
        String::new(),
        "   ".into(),
        "\u{200B}\u{3164}".into(),
        "x".repeat(65),
        "evil\u{202E}txt".into(),
        "bell\u{7}".into(),
    ] {
        let response = app
            .patch("/api/me", &alice.token, json!({ "display_name": bad }))
            .await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_display_name").await;
    }
    let response = app
        .patch("/api/me", &alice.token, json!({ "display_name": 7 }))
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app
        .client
        .patch(app.url("/api/me"))
        .json(&json!({ "display_name": "x" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn the_public_config_needs_no_token() {
    let app = spawn_app_with(&[
        ("MAX_FILE_SIZE_MB", "3"),
        ("ALLOWED_FILE_TYPES", "image/*,application/pdf"),
    ])
    .await;
    let response = app.client.get(app.url("/api/config")).send().await.unwrap();
    let config = expect_json(response, StatusCode::OK).await;
    assert_eq!(config["max_file_size_bytes"], 3 * 1024 * 1024);
    assert_eq!(
        config["allowed_file_types"],
        json!(["image/*", "application/pdf"])
    );
    assert_eq!(config["max_files_per_message"], 10);
    assert_eq!(config["user_quota_bytes"], Value::Null);
    assert_eq!(config["direct_uploads"], true);
    assert_eq!(config["max_reactions_per_message"], 20);
    assert_eq!(config["file_retention_days"], Value::Null);

    // The governance settings, when set.
    let governed = spawn_app_with(&[("USER_QUOTA_MB", "5"), ("FILE_RETENTION_DAYS", "90")]).await;
    let response = governed
        .client
        .get(governed.url("/api/config"))
        .send()
        .await
        .unwrap();
    let config = expect_json(response, StatusCode::OK).await;
    assert_eq!(config["user_quota_bytes"], 5 * 1024 * 1024);
    assert_eq!(config["file_retention_days"], 90);
}

/// The history page: 50 top-level messages with their files, reactions and reply counts
/// take one query per kind (messages with authors, files, reactions), however many
/// messages, files and reactions; counted with diesel's instrumentation.
#[tokio::test]
async fn a_history_page_is_one_query_per_kind() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chatserver::db::messages::PageRequest;
    use diesel::Connection;
    use diesel::connection::InstrumentationEvent;

    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    for i in 0..50 {
        let message = expect_json(
            app.post_files(
                &alice,
                channel,
                &format!("message {i}"),
                &[Upload::new("a.png", "image/png", fixtures::png(200))],
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        for (user, emoji) in [(&alice, "👍"), (&bob, "👍"), (&bob, "🎉")] {
            let path = reaction_path(channel, &message, emoji);
            assert_eq!(
                app.put(&path, &user.token).await.status(),
                StatusCode::NO_CONTENT
            );
        }
        if i % 5 == 0 {
            app.reply(&bob, channel, &message, "a reply").await;
        }
    }

    let channel_id = channel as i32;
    let (page, queries, elapsed) = app
        .state
        .db
        .run(move |conn| {
            let queries = Arc::new(AtomicUsize::new(0));
            let counter = queries.clone();
            conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
                if let InstrumentationEvent::StartQuery { .. } = event {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
            let request = PageRequest {
                before: None,
                after: None,
                limit: 50,
            };
            let started = std::time::Instant::now();
            let page = chatserver::db::messages::page(conn, channel_id, request);
            let elapsed = started.elapsed();
            // The connection goes back to the pool: stop counting.
            conn.set_instrumentation(|_: InstrumentationEvent<'_>| {});
            Ok((page?, queries.load(Ordering::Relaxed), elapsed))
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 50);
    assert!(page.messages.iter().all(|m| m.files.len() == 1));
    assert!(page.messages.iter().all(|m| m.reactions.len() == 2));
    assert_eq!(page.messages[0].row.reply_count, 1);
    // No content names anyone (`@`), so no mentions query.
    assert_eq!(
        queries, 3,
        "messages, files, reactions: one query each, and none for mentions"
    );
    eprintln!(
        "history page on {}: 50 messages, 50 files, 150 reactions in {queries} queries, {elapsed:?}",
        app.backend()
    );
}
