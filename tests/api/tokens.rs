//! Every way a bearer token can be wrong answers 401; a correct forgery control proves the
//! forged tokens differ from valid ones only in the one thing each test breaks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp, expect_error, spawn_app};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(user_id: i64) -> Value {
    json!({
        "sub": user_id.to_string(),
        "iat": now(),
        "exp": now() + 600,
        "iss": "chatserver",
        "aud": "chatserver-api",
    })
}

fn sign(claims: &Value, algorithm: Algorithm, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap()
}

async fn me_status(app: &TestApp, authorization: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url("/api/me"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

async fn assert_refused(app: &TestApp, token: &str) {
    let response = me_status(app, Some(&format!("Bearer {token}"))).await;
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn a_correctly_forged_token_is_accepted() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    let token = sign(&claims(user.id), Algorithm::HS256, JWT_SECRET.as_bytes());
    let response = me_status(&app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn expired_tokens_are_401() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    let mut c = claims(user.id);
    c["iat"] = json!(now() - 7200);
    c["exp"] = json!(now() - 3600);
    assert_refused(&app, &sign(&c, Algorithm::HS256, JWT_SECRET.as_bytes())).await;
}

#[tokio::test]
async fn tokens_issued_in_the_future_are_401() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    let mut c = claims(user.id);
    c["iat"] = json!(now() + 3600);
    c["exp"] = json!(now() + 7200);
    assert_refused(&app, &sign(&c, Algorithm::HS256, JWT_SECRET.as_bytes())).await;
    // Within the clock-skew leeway it is fine.
    c["iat"] = json!(now() + 2);
    let token = sign(&c, Algorithm::HS256, JWT_SECRET.as_bytes());
    let response = me_status(&app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Found by attack: connections that never send a request head are closed after the
/// client request timeout instead of being held.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    use tokio::io::AsyncReadExt;
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://");
    let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(15), silent.read(&mut buf))
        .await
        .expect("closed by the server within its request timeout");
    // Closed: EOF, a 408 (actix answers one), or a reset.
    if let Ok(n) = read
        && n > 0
    {
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
    }
}

#[tokio::test]
async fn tokens_signed_with_another_key_are_401() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    let other_key = b"another-secret-another-secret-another-secret";
    assert_refused(&app, &sign(&claims(user.id), Algorithm::HS256, other_key)).await;
}

#[tokio::test]
async fn tokens_with_alg_none_are_401() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(user.id).to_string());
    assert_refused(&app, &format!("{header}.{payload}.")).await;
    assert_refused(&app, &format!("{header}.{payload}")).await;
}

#[tokio::test]
async fn tokens_with_another_algorithm_are_401() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    for algorithm in [Algorithm::HS384, Algorithm::HS512] {
        assert_refused(
            &app,
            &sign(&claims(user.id), algorithm, JWT_SECRET.as_bytes()),
        )
        .await;
    }
}

#[tokio::test]
async fn tokens_missing_or_mistyping_required_claims_are_401() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    for claim in ["exp", "sub", "iss", "aud", "iat"] {
        let mut c = claims(user.id);
        c.as_object_mut().unwrap().remove(claim);
        assert_refused(&app, &sign(&c, Algorithm::HS256, JWT_SECRET.as_bytes())).await;
    }
    let mutations = [
        ("exp", json!((now() + 600).to_string())),
        ("iss", json!("someone-else")),
        ("aud", json!("another-api")),
        ("sub", json!("not-a-number")),
    ];
    for (claim, value) in mutations {
        let mut c = claims(user.id);
        c[claim] = value;
        assert_refused(&app, &sign(&c, Algorithm::HS256, JWT_SECRET.as_bytes())).await;
    }
}

#[tokio::test]
async fn missing_or_malformed_authorization_headers_are_401() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    expect_error(
        me_status(&app, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // docs/api.md: `unauthorized` when there is no bearer token, `invalid_token` otherwise;
    // always with `WWW-Authenticate: Bearer`.
    let no_bearer_token = [
        "Bearer".to_string(),
        "Bearer ".to_string(),
        format!("Basic {}", user.token),
        format!("Token {}", user.token),
        user.token.clone(),
    ];
    let bad_bearer_token = [
        "Bearer not.a.jwt".to_string(),
        "Bearer !!!.???.***".to_string(),
        format!("Bearer {}x", user.token),
    ];
    let cases = no_bearer_token
        .iter()
        .map(|v| (v, "unauthorized"))
        .chain(bad_bearer_token.iter().map(|v| (v, "invalid_token")));
    for (value, code) in cases {
        let response = me_status(&app, Some(value)).await;
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{value}"
        );
        expect_error(response, StatusCode::UNAUTHORIZED, code).await;
    }
    // And the real token still works.
    assert_eq!(
        me_status(&app, Some(&format!("Bearer {}", user.token)))
            .await
            .status(),
        StatusCode::OK
    );
}
