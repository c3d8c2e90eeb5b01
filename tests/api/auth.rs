use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, expect_error, expect_json, spawn_app, spawn_app_with};

#[tokio::test]
async fn register_login_and_me() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({ "username": "alice", "password": PASSWORD, "display_name": "Alice A." }))
        .send()
        .await
        .unwrap();
    let registered = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(registered["user"]["username"], "alice");
    assert_eq!(registered["user"]["display_name"], "Alice A.");
    assert!(registered["user"]["id"].is_i64());
    let created_at = registered["user"]["created_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok() && created_at.ends_with('Z'));
    assert!(registered["user"].get("password_hash").is_none());

    let response = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let logged_in = expect_json(response, StatusCode::OK).await;
    assert_eq!(logged_in["user"], registered["user"]);

    for token in [&registered["token"], &logged_in["token"]] {
        let me = app.get("/api/me", token.as_str().unwrap()).await;
        assert_eq!(expect_json(me, StatusCode::OK).await, registered["user"]);
    }
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_hashes() {
    use chatserver::db::schema::users;
    use diesel::prelude::*;
    let app = spawn_app().await;
    app.register("carol").await;
    let hash: String = app
        .state
        .db
        .run(|conn| Ok(users::table.select(users::password_hash).first(conn)?))
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
}

#[tokio::test]
async fn a_taken_username_is_409() {
    let app = spawn_app().await;
    app.register("alice").await;
    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({ "username": "alice", "password": "another password" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT, "username_taken").await;
}

#[tokio::test]
async fn invalid_usernames_and_weak_passwords_are_400() {
    let app = spawn_app().await;
    let long = "a".repeat(33);
    for username in [
        "ab",
        long.as_str(),
        "Alice",
        "al ice",
        "al/ice",
        "ali\u{e9}",
        "",
    ] {
        let response = app
            .client
            .post(app.url("/api/auth/register"))
            .json(&json!({ "username": username, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_username").await;
    }
    for password in ["", "short", "1234567"] {
        let response = app
            .client
            .post(app.url("/api/auth/register"))
            .json(&json!({ "username": "bob", "password": password }))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "weak_password").await;
    }
    // Limits are inclusive: 3 and 32 characters, 8-character passwords are fine.
    for username in ["abc", &"b".repeat(32), "a.b_c-9"] {
        let response = app
            .client
            .post(app.url("/api/auth/register"))
            .json(&json!({ "username": username, "password": "12345678" }))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::CREATED).await;
    }
}

#[tokio::test]
async fn wrong_password_or_unknown_user_is_401() {
    let app = spawn_app().await;
    app.register("alice").await;
    for (username, password) in [("alice", "wrong password"), ("nobody", PASSWORD)] {
        let response = app
            .client
            .post(app.url("/api/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
}

#[tokio::test]
async fn malformed_json_and_wrong_content_type_are_400_with_the_error_body() {
    let app = spawn_app().await;
    let malformed = app
        .client
        .post(app.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{\"username\": \"alice\", ")
        .send()
        .await
        .unwrap();
    expect_error(malformed, StatusCode::BAD_REQUEST, "invalid_json").await;

    let wrong_type = app
        .client
        .post(app.url("/api/auth/register"))
        .header("content-type", "text/plain")
        .body(json!({ "username": "alice", "password": PASSWORD }).to_string())
        .send()
        .await
        .unwrap();
    expect_error(wrong_type, StatusCode::BAD_REQUEST, "bad_request").await;

    let wrong_shape = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({ "username": 42 }))
        .send()
        .await
        .unwrap();
    expect_error(wrong_shape, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn repeated_logins_for_one_username_are_rate_limited() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_MINUTE", "3")]).await;
    app.register("alice").await;
    let login = |username: &str, password: &str| {
        app.client
            .post(app.url("/api/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
    };
    for _ in 0..3 {
        let response = login("alice", "wrong password").await.unwrap();
        expect_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // The right password too: the limit is on attempts, not on failures.
    let limited = login("alice", PASSWORD).await.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Other usernames are not affected.
    let other = login("bob", PASSWORD).await.unwrap();
    expect_error(other, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}
