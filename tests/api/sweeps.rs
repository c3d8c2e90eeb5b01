//! The sweeper's edges that the file tests leave unchecked (found by mutation testing, issue
//! 21): the background loop really runs, and a sweep keeps what is still in use.

use reqwest::StatusCode;
use serde_json::json;

use crate::fixtures::{self, Upload};
use crate::helpers::{eventually, expect_json, spawn_app, spawn_app_with};

/// With `GC_INTERVAL_SECONDS` set, the server sweeps on its own: a deleted file's object
/// is purged with no one calling the sweeper.
#[tokio::test]
async fn the_background_sweeper_purges_deleted_files_by_itself() {
    let app = spawn_app_with(&[
        ("GC_INTERVAL_SECONDS", "1"),
        ("FILE_PURGE_AFTER_SECONDS", "0"),
    ])
    .await;
    let (alice, _, channel) = app.two_members().await;
    let message = expect_json(
        app.post_files(
            &alice,
            channel,
            "pic",
            &[Upload::new("pic.png", "image/png", fixtures::png(2000))],
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(app.object_keys().await.len(), 1);
    let id = &message["files"][0]["id"];
    assert_eq!(
        app.delete(&format!("/api/files/{id}"), &alice.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(
        eventually(async || app.object_keys().await.is_empty()).await,
        "the background sweeper did not purge the deleted file's object"
    );
}

/// An idempotency key younger than its TTL survives a sweep: a retry still replays.
#[tokio::test]
async fn a_sweep_keeps_idempotency_keys_that_have_not_expired() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let post = || {
        app.client
            .post(app.url(&format!("/api/channels/{channel}/messages")))
            .bearer_auth(&alice.token)
            .header("Idempotency-Key", "fresh")
            .json(&json!({ "content": "hi" }))
            .send()
    };
    let first = expect_json(post().await.unwrap(), StatusCode::CREATED).await;
    let report = chatserver::gc::sweep(&(&app.state).into()).await.unwrap();
    assert_eq!(report.idempotency_keys_expired, 0);
    let again = post().await.unwrap();
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(b"true".as_slice())
    );
    assert_eq!(
        expect_json(again, StatusCode::CREATED).await["id"],
        first["id"]
    );
}
