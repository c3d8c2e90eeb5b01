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

/// A client whose connections come from `source` (any 127.x address reaches the server's
/// 127.0.0.1 on Linux): a second, real client address for the per-address limits.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login_as(
    client: &reqwest::Client,
    app: &crate::helpers::TestApp,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .post(app.url("/api/auth/login"))
        .json(&json!({ "username": username, "password": password }));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn failed_logins_lock_out_the_guesser_but_not_the_owner_elsewhere() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_MINUTE", "3")]).await;
    app.register("alice").await;
    let attacker = client_from("127.0.0.1");
    for _ in 0..3 {
        let response = login_as(&attacker, &app, "alice", "wrong password", None).await;
        expect_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // From the guesser's address even the right password waits.
    let limited = login_as(&attacker, &app, "alice", PASSWORD, None).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The owner, from another address, gets in.
    let owner = client_from("127.0.0.2");
    let response = login_as(&owner, &app, "alice", PASSWORD, None).await;
    expect_json(response, StatusCode::OK).await;
    // Other usernames from the guesser's address are not affected.
    let other = login_as(&attacker, &app, "bob", PASSWORD, None).await;
    expect_error(other, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[tokio::test]
async fn successful_logins_do_not_use_up_the_limit() {
    let app = spawn_app_with(&[
        ("LOGIN_ATTEMPTS_PER_MINUTE", "2"),
        ("LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS", "2"),
    ])
    .await;
    app.register("alice").await;
    for _ in 0..5 {
        let response = login_as(&app.client, &app, "alice", PASSWORD, None).await;
        expect_json(response, StatusCode::OK).await;
    }
}

#[tokio::test]
async fn one_address_spraying_many_usernames_is_limited() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS", "4")]).await;
    app.register("alice").await;
    let sprayer = client_from("127.0.0.1");
    for name in ["ann", "ben", "cat", "dan"] {
        let response = login_as(&sprayer, &app, name, "password123", None).await;
        expect_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let limited = login_as(&sprayer, &app, "eve", "password123", None).await;
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let elsewhere = client_from("127.0.0.3");
    let response = login_as(&elsewhere, &app, "alice", PASSWORD, None).await;
    expect_json(response, StatusCode::OK).await;
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    // Not trusted: a made-up X-Forwarded-For per attempt does not escape the limit.
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_MINUTE", "2")]).await;
    app.register("alice").await;
    for fake in ["203.0.113.1", "203.0.113.2"] {
        let response = login_as(&app.client, &app, "alice", "wrong password", Some(fake)).await;
        expect_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let response = login_as(&app.client, &app, "alice", PASSWORD, Some("203.0.113.3")).await;
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // Behind a trusted proxy the forwarded address is the client.
    let app = spawn_app_with(&[
        ("LOGIN_ATTEMPTS_PER_MINUTE", "2"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    app.register("alice").await;
    let guesser = Some("203.0.113.5");
    for _ in 0..2 {
        let response = login_as(&app.client, &app, "alice", "wrong password", guesser).await;
        expect_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let response = login_as(&app.client, &app, "alice", PASSWORD, guesser).await;
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let owner = Some("198.51.100.7");
    let response = login_as(&app.client, &app, "alice", PASSWORD, owner).await;
    expect_json(response, StatusCode::OK).await;
}

#[tokio::test]
async fn registrations_are_limited_per_address() {
    let app = spawn_app_with(&[("REGISTRATIONS_PER_MINUTE_PER_ADDRESS", "2")]).await;
    let register = |client: reqwest::Client, username: &'static str| {
        let url = app.url("/api/auth/register");
        async move {
            client
                .post(url)
                .json(&json!({ "username": username, "password": PASSWORD }))
                .send()
                .await
                .unwrap()
        }
    };
    let here = client_from("127.0.0.1");
    // A refused body is not counted.
    let invalid = register(here.clone(), "x").await;
    expect_error(invalid, StatusCode::BAD_REQUEST, "invalid_username").await;
    for name in ["ann", "ben"] {
        expect_json(register(here.clone(), name).await, StatusCode::CREATED).await;
    }
    let limited = register(here.clone(), "cat").await;
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let elsewhere = register(client_from("127.0.0.2"), "cat").await;
    expect_json(elsewhere, StatusCode::CREATED).await;
}

#[tokio::test]
async fn display_names_are_nfc_and_blank_ones_are_refused() {
    let app = spawn_app().await;
    let register = |username: &str, display_name: &str| {
        app.client
            .post(app.url("/api/auth/register"))
            .json(&json!({ "username": username, "password": PASSWORD, "display_name": display_name }))
            .send()
    };
    let registered = expect_json(
        register("rene", "Rene\u{301}e").await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(registered["user"]["display_name"], "Ren\u{e9}e");
    for blank in ["\u{200B}", "\u{3164}\u{3164}", "\u{2800}", " \u{FEFF} "] {
        let refused = register("blank", blank).await.unwrap();
        expect_error(refused, StatusCode::BAD_REQUEST, "invalid_display_name").await;
    }
}
