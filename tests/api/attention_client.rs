//! What the browser client's attention features need from the server: a channel's files
//! newest first, files on thread replies, `user_updated` on a rename, hiding a DM.

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::fixtures::{self, Upload};
use crate::helpers::{TestApp, TestUser, expect_error, expect_json, spawn_app};
use crate::ws::WsClient;

impl TestApp {
    /// One page of `GET /api/channels/{id}/files` as `user`.
    async fn channel_files(&self, user: &TestUser, channel: i64, query: &str) -> Value {
        let response = self
            .get(
                &format!("/api/channels/{channel}/files{query}"),
                &user.token,
            )
            .await;
        expect_json(response, StatusCode::OK).await
    }

    async fn post_file(&self, user: &TestUser, channel: i64, name: &str) -> Value {
        let upload = Upload::new(name, "image/png", fixtures::png(300));
        let response = self.post_files(user, channel, "", &[upload]).await;
        expect_json(response, StatusCode::CREATED).await
    }

    /// A multipart reply: `thread_id`, `content`, then one file.
    async fn reply_with_file(
        &self,
        user: &TestUser,
        channel: i64,
        thread_id: &str,
        name: &str,
    ) -> reqwest::Response {
        let part = Part::bytes(fixtures::png(200))
            .file_name(name.to_owned())
            .mime_str("image/png")
            .unwrap();
        let form = Form::new()
            .text("thread_id", thread_id.to_owned())
            .text("content", "see attached")
            .part("file", part);
        self.client
            .post(self.url(&format!("/api/channels/{channel}/messages")))
            .bearer_auth(&user.token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// The caller's entry for `channel` in `GET /api/channels`.
    async fn my_channel(&self, user: &TestUser, channel: i64) -> Value {
        let list = expect_json(self.get("/api/channels", &user.token).await, StatusCode::OK).await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == channel)
            .unwrap_or_else(|| panic!("channel {channel} not in {list}"))
            .clone()
    }
}

fn file_names(page: &Value) -> Vec<String> {
    page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn channel_files_are_listed_newest_first_with_keyset_paging() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let first = app.post_file(&alice, channel, "one.png").await;
    let second = app.post_file(&bob, channel, "two.png").await;
    app.post_message(&alice, channel, "no files here").await;
    let doomed = app.post_file(&alice, channel, "gone.png").await;
    let reply = app
        .reply_with_file(&bob, channel, &first["id"].to_string(), "reply.png")
        .await;
    expect_json(reply, StatusCode::CREATED).await;
    let last = app.post_file(&alice, channel, "four.png").await;
    // Another channel's file never shows here.
    let other = app.create_channel(&alice, "other", false).await;
    app.post_file(&alice, other, "elsewhere.png").await;
    let deleted = app
        .delete(
            &format!("/api/files/{}", doomed["files"][0]["id"]),
            &alice.token,
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let all = app.channel_files(&bob, channel, "").await;
    assert_eq!(
        file_names(&all),
        ["four.png", "reply.png", "two.png", "one.png"]
    );
    assert_eq!(all["has_more"], false);
    assert_eq!(all["next_before"], Value::Null);
    let newest = &all["files"][0];
    assert_eq!(newest["id"], last["files"][0]["id"]);
    assert_eq!(newest["message_id"], last["id"]);
    assert_eq!(newest["channel_id"], channel);
    assert!(newest["url"].as_str().unwrap().starts_with("http"));

    // Pages of two, by `next_before`: every file once, in order.
    let page = app.channel_files(&bob, channel, "?limit=2").await;
    assert_eq!(file_names(&page), ["four.png", "reply.png"]);
    assert_eq!(page["has_more"], true);
    let before = page["next_before"].as_i64().unwrap();
    assert_eq!(before, page["files"][1]["id"].as_i64().unwrap());
    let page = app
        .channel_files(&bob, channel, &format!("?limit=2&before={before}"))
        .await;
    assert_eq!(file_names(&page), ["two.png", "one.png"]);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["files"][0]["id"], second["files"][0]["id"]);

    // Not a member, no such channel, a bad limit.
    let carol = app.register("carol").await;
    let response = app
        .get(&format!("/api/channels/{channel}/files"), &carol.token)
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app.get("/api/channels/999999/files", &alice.token).await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .get(
            &format!("/api/channels/{channel}/files?limit=0"),
            &alice.token,
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    // A member who leaves sees nothing more.
    let response = app
        .delete(&format!("/api/channels/{channel}/members/me"), &bob.token)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .get(&format!("/api/channels/{channel}/files"), &bob.token)
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_thread_reply_carries_files() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let root = app.post_message(&alice, channel, "the plan").await;
    let (mut alice_ws, _) = WsClient::login(&app, &alice).await;

    let response = app
        .reply_with_file(&bob, channel, &root["id"].to_string(), "diagram.png")
        .await;
    let reply = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(reply["thread_id"], root["id"]);
    assert_eq!(reply["content"], "see attached");
    assert_eq!(reply["files"][0]["file_name"], "diagram.png");

    let created = alice_ws.next_of("message_created").await;
    assert_eq!(created["data"]["thread_id"], root["id"]);
    assert_eq!(created["data"]["files"][0]["file_name"], "diagram.png");
    let updated = alice_ws.next_of("message_updated").await;
    assert_eq!(updated["data"]["id"], root["id"]);
    assert_eq!(updated["data"]["reply_count"], 1);

    let thread = app
        .get(
            &format!("/api/channels/{channel}/messages/{}/thread", root["id"]),
            &alice.token,
        )
        .await;
    let thread = expect_json(thread, StatusCode::OK).await;
    assert_eq!(thread["messages"][0]["id"], reply["id"]);
    assert_eq!(
        thread["messages"][0]["files"][0]["file_name"],
        "diagram.png"
    );
    // The channel's listing keeps to top-level messages.
    let listing = app
        .get(&format!("/api/channels/{channel}/messages"), &alice.token)
        .await;
    let listing = expect_json(listing, StatusCode::OK).await;
    assert_eq!(listing["messages"].as_array().unwrap().len(), 1);

    // A reply is no thread root; a thread_id that is no number is refused; nothing stored.
    let before = app.object_keys().await.len();
    let response = app
        .reply_with_file(&alice, channel, &reply["id"].to_string(), "x.png")
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app.reply_with_file(&alice, channel, "first", "x.png").await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_eq!(app.object_keys().await.len(), before);
}

#[tokio::test]
async fn a_rename_reaches_everyone_sharing_a_channel() {
    let app = spawn_app().await;
    let (alice, bob, _channel) = app.two_members().await;
    let carol = app.register("carol").await;
    let (mut bob_ws, _) = WsClient::login(&app, &bob).await;
    let (mut carol_ws, _) = WsClient::login(&app, &carol).await;

    let response = app
        .client
        .patch(app.url("/api/me"))
        .bearer_auth(&alice.token)
        .json(&json!({ "display_name": "Alice Liddell" }))
        .send()
        .await
        .unwrap();
    let user = expect_json(response, StatusCode::OK).await;
    assert_eq!(user["display_name"], "Alice Liddell");

    let event = bob_ws.next_of("user_updated").await;
    assert_eq!(event["data"]["user"]["id"], alice.id);
    assert_eq!(event["data"]["user"]["display_name"], "Alice Liddell");
    assert_eq!(event["data"]["user"]["username"], "alice");
    // Carol shares no channel with alice: told nothing.
    carol_ws.assert_quiet().await;
}

#[tokio::test]
async fn a_hidden_dm_comes_back_with_the_next_message() {
    let app = spawn_app().await;
    let (alice, bob, channel) = app.two_members().await;
    let response = app
        .post("/api/dms", &alice.token, json!({ "username": "bobby" }))
        .await;
    let dm = expect_json(response, StatusCode::CREATED).await["id"]
        .as_i64()
        .unwrap();
    app.post_message(&alice, dm, "hi").await;
    assert_eq!(app.my_channel(&alice, dm).await["hidden"], false);
    let (mut alice_ws, _) = WsClient::login(&app, &alice).await;
    let (mut bob_ws, _) = WsClient::login(&app, &bob).await;

    let hide = app
        .post(&format!("/api/dms/{dm}/hide"), &alice.token, json!({}))
        .await;
    assert_eq!(hide.status(), StatusCode::NO_CONTENT);
    let event = alice_ws.next_of("dm_hidden").await;
    assert_eq!(event["data"], json!({ "channel_id": dm }));
    bob_ws.assert_quiet().await;
    assert_eq!(app.my_channel(&alice, dm).await["hidden"], true);
    assert_eq!(app.my_channel(&bob, dm).await["hidden"], false);
    // Hiding again is harmless; the messages are all still there.
    let again = app
        .post(&format!("/api/dms/{dm}/hide"), &alice.token, json!({}))
        .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    let listing = app
        .get(&format!("/api/channels/{dm}/messages"), &alice.token)
        .await;
    assert_eq!(
        expect_json(listing, StatusCode::OK).await["messages"][0]["content"],
        "hi"
    );

    // bob writes: it is back for alice.
    app.post_message(&bob, dm, "still there?").await;
    assert_eq!(app.my_channel(&alice, dm).await["hidden"], false);

    // Hidden, then opened again by alice: back too.
    app.post(&format!("/api/dms/{dm}/hide"), &alice.token, json!({}))
        .await;
    assert_eq!(app.my_channel(&alice, dm).await["hidden"], true);
    let reopened = app
        .post("/api/dms", &alice.token, json!({ "username": "bobby" }))
        .await;
    assert_eq!(expect_json(reopened, StatusCode::OK).await["id"], dm);
    assert_eq!(app.my_channel(&alice, dm).await["hidden"], false);

    // A channel is left, not hidden; someone else's DM does not exist for the caller.
    let response = app
        .post(&format!("/api/dms/{channel}/hide"), &alice.token, json!({}))
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let carol = app.register("carol").await;
    let response = app
        .post(&format!("/api/dms/{dm}/hide"), &carol.token, json!({}))
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}
