//! The error contract: one code list (`ErrorCode`) that docs/api.md documents, plain-word
//! messages, 405 with `Allow`, 413 for an oversized JSON body.

use std::collections::BTreeSet;

use chatserver::error::ErrorCode;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_error, spawn_app};

/// Every code in the server's enum is in docs/api.md's table, and the table names no code
/// the server cannot send.
#[test]
fn the_documented_error_codes_are_the_servers() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("docs/api.md");
    let section = docs
        .split("### Error codes")
        .nth(1)
        .expect("an `### Error codes` section");
    let documented: BTreeSet<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(2))
        .flat_map(|codes| codes.split('`').skip(1).step_by(2))
        .collect();
    let served: BTreeSet<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(
        documented, served,
        "docs/api.md's error table and ErrorCode differ"
    );
}

#[tokio::test]
async fn a_known_path_with_another_method_is_405_with_allow() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let response = app
        .client
        .put(app.url("/api/channels"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    assert_eq!(allow, "POST, GET");

    let response = app
        .client
        .delete(app.url("/api/channels/public"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET");
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    // An unknown path stays a 404.
    let response = app.get("/api/nothing/here", &alice.token).await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn an_oversized_json_body_is_413() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let channel = app.create_channel(&alice, "general", false).await;
    let body = json!({ "content": "x".repeat(70 * 1024) });
    let response = app
        .post(
            &format!("/api/channels/{channel}/messages"),
            &alice.token,
            body,
        )
        .await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn path_and_query_errors_are_in_plain_words() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let response = app.get("/api/channels/abc", &alice.token).await;
    let body = expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"abc\" is not a whole number"),
        "{message}"
    );

    let channel = app.create_channel(&alice, "general", false).await;
    let response = app
        .get(
            &format!("/api/channels/{channel}/messages?limit=lots"),
            &alice.token,
        )
        .await;
    let body = expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let message = body["error"]["message"].as_str().unwrap();
    for rust in ["i32", "i64", "usize", "u64"] {
        assert!(!message.contains(rust), "a Rust type in {message:?}");
    }
}
