use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_error, expect_json, recv_within, spawn_app};

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn create_list_and_public_list() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;

    let response = app
        .post("/api/channels", &alice.token, json!({ "name": "general" }))
        .await;
    let general = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(general["name"], "general");
    assert_eq!(general["is_private"], false);
    assert_eq!(general["created_by"], alice.id);
    assert!(general["created_at"].as_str().unwrap().ends_with('Z'));
    let secret = app.create_channel(&alice, "secret", true).await;
    let bobs = app.create_channel(&bob, "bobs", false).await;

    let mine = expect_json(app.get("/api/channels", &alice.token).await, StatusCode::OK).await;
    assert_eq!(ids(&mine), vec![general["id"].as_i64().unwrap(), secret]);
    let public = expect_json(
        app.get("/api/channels/public", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&public), vec![general["id"].as_i64().unwrap(), bobs]);

    let members = app
        .get(&format!("/api/channels/{secret}/members"), &alice.token)
        .await;
    let members = expect_json(members, StatusCode::OK).await;
    assert_eq!(members[0]["username"], "alice");
}

#[tokio::test]
async fn channel_names_are_validated() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for name in [
        "",
        "   ",
        &"x".repeat(81),
        "bad\u{0}name",
        "rtl\u{202e}gnp.exe",
    ] {
        let response = app
            .post("/api/channels", &alice.token, json!({ "name": name }))
            .await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_channel_name").await;
    }
    let response = app
        .post("/api/channels", &alice.token, json!({ "is_private": true }))
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn joining_a_public_channel_works_and_a_private_one_is_404() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let public = app.create_channel(&alice, "public", false).await;
    let private = app.create_channel(&alice, "private", true).await;

    let joined = app
        .post(
            &format!("/api/channels/{public}/join"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(expect_json(joined, StatusCode::OK).await["id"], public);
    // Joining again is harmless.
    let again = app
        .post(
            &format!("/api/channels/{public}/join"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let mine = expect_json(app.get("/api/channels", &bob.token).await, StatusCode::OK).await;
    assert_eq!(ids(&mine), vec![public]);

    let refused = app
        .post(
            &format!("/api/channels/{private}/join"),
            &bob.token,
            json!({}),
        )
        .await;
    expect_error(refused, StatusCode::NOT_FOUND, "not_found").await;
    let missing = app
        .post("/api/channels/999999/join", &bob.token, json!({}))
        .await;
    expect_error(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn members_add_members_and_leaving_ends_access() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let carol = app.register("carol").await;
    let private = app.create_channel(&alice, "private", true).await;
    let members_path = format!("/api/channels/{private}/members");
    let messages_path = format!("/api/channels/{private}/messages");

    // Non-members cannot see or add.
    expect_error(
        app.get(&messages_path, &bob.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let refused = app
        .post(&members_path, &carol.token, json!({ "username": "bobby" }))
        .await;
    expect_error(refused, StatusCode::NOT_FOUND, "not_found").await;

    let added = app
        .post(&members_path, &alice.token, json!({ "username": "bobby" }))
        .await;
    assert_eq!(
        expect_json(added, StatusCode::CREATED).await["username"],
        "bobby"
    );
    // Any member may add; unknown users are 404 and existing members 409.
    let added = app
        .post(&members_path, &bob.token, json!({ "username": "carol" }))
        .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let unknown = app
        .post(&members_path, &bob.token, json!({ "username": "nobody" }))
        .await;
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let twice = app
        .post(&members_path, &bob.token, json!({ "username": "carol" }))
        .await;
    expect_error(twice, StatusCode::CONFLICT, "already_member").await;

    let listed = expect_json(app.get(&members_path, &bob.token).await, StatusCode::OK).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bobby", "carol"]);

    app.post_message(&bob, private, "hello").await;
    assert_eq!(
        app.get(&messages_path, &bob.token).await.status(),
        StatusCode::OK
    );

    let left = app
        .delete(&format!("/api/channels/{private}/members/me"), &bob.token)
        .await;
    assert_eq!(left.status(), StatusCode::NO_CONTENT);
    expect_error(
        app.get(&messages_path, &bob.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let post = app
        .post(
            &messages_path,
            &bob.token,
            json!({ "content": "still here?" }),
        )
        .await;
    expect_error(post, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(
        app.get(&members_path, &bob.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let mine = expect_json(app.get("/api/channels", &bob.token).await, StatusCode::OK).await;
    assert_eq!(ids(&mine), Vec::<i64>::new());
    // Leaving twice: no longer a member.
    let again = app
        .delete(&format!("/api/channels/{private}/members/me"), &bob.token)
        .await;
    expect_error(again, StatusCode::NOT_FOUND, "not_found").await;
    // The others keep access.
    assert_eq!(
        app.get(&messages_path, &carol.token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn membership_changes_are_published_after_commit() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let mut events = app.events().await;

    app.post(
        &format!("/api/channels/{channel}/join"),
        &bob.token,
        json!({}),
    )
    .await;
    app.delete(&format!("/api/channels/{channel}/members/me"), &bob.token)
        .await;

    let joined = app.render(&recv_within(&mut events, "member_joined").await, &alice);
    assert_eq!(joined["type"], "member_joined");
    assert_eq!(joined["channel_id"], channel);
    assert_eq!(joined["data"]["user"]["username"], "bobby");
    let left = app.render(&recv_within(&mut events, "member_left").await, &alice);
    assert_eq!(left["type"], "member_left");
    assert_eq!(left["data"]["channel_id"], channel);
    // Exactly one event per change: the next one is a later message's.
    app.assert_no_more_events(&mut events, &alice, channel)
        .await;
}

/// Conflicting writes at the same moment (on PostgreSQL truly concurrent transactions; on
/// SQLite one writer's batch): exactly one wins and the others get the documented answer,
/// never a 500 or a duplicate row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writes_at_the_same_moment_have_one_winner() {
    use futures_util::future::join_all;
    const AT_ONCE: usize = 4;
    let app = spawn_app().await;

    // Registrations of one name: one 201, the rest 409 username_taken.
    let registrations = (0..AT_ONCE).map(|_| {
        app.client
            .post(app.url("/api/auth/register"))
            .json(&json!({ "username": "samename", "password": crate::helpers::PASSWORD }))
            .send()
    });
    let mut created = 0;
    for answer in join_all(registrations).await {
        let answer = answer.unwrap();
        if answer.status() == StatusCode::CREATED {
            created += 1;
        } else {
            expect_error(answer, StatusCode::CONFLICT, "username_taken").await;
        }
    }
    assert_eq!(created, 1, "exactly one registration of the name");

    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let carol = app.register("carol").await;
    let public = app.create_channel(&alice, "public", false).await;
    let private = app.create_channel(&alice, "private", true).await;
    let mut events = app.events().await;

    // Joining at once: joining again is harmless, so all 200; one membership, one event.
    let path = format!("/api/channels/{public}/join");
    let joins = (0..AT_ONCE).map(|_| app.post(&path, &bob.token, json!({})));
    for answer in join_all(joins).await {
        assert_eq!(expect_json(answer, StatusCode::OK).await["id"], public);
    }
    let members = expect_json(
        app.get(&format!("/api/channels/{public}/members"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    let joined = app.render(&recv_within(&mut events, "member_joined").await, &alice);
    assert_eq!(joined["type"], "member_joined");
    app.assert_no_more_events(&mut events, &alice, public).await;

    // Adding one user at once: one 201, the rest 409 already_member.
    let path = format!("/api/channels/{private}/members");
    let adds = (0..AT_ONCE).map(|_| app.post(&path, &alice.token, json!({ "username": "carol" })));
    let mut added = 0;
    for answer in join_all(adds).await {
        if answer.status() == StatusCode::CREATED {
            added += 1;
        } else {
            expect_error(answer, StatusCode::CONFLICT, "already_member").await;
        }
    }
    assert_eq!(added, 1, "exactly one add");
    let members = expect_json(app.get(&path, &carol.token).await, StatusCode::OK).await;
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
}
