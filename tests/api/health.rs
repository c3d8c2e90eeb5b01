use reqwest::StatusCode;

use crate::helpers::{expect_error, expect_json, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(expect_json(health, StatusCode::OK).await["status"], "ok");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body = expect_json(ready, StatusCode::OK).await;
    assert_eq!(body["database"]["ok"], true);
    assert_eq!(body["database"]["backend"], app.backend());
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .expect("a request id");
    assert!(id.len() >= 16);
}

#[tokio::test]
async fn unknown_api_routes_answer_json_404() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/no/such/thing"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_static_client_is_served_at_the_root() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("<html"));
}

/// The client's pages may run only their own scripts and are never framed; no response is
/// sniffed or leaks its URL as a referrer.
#[tokio::test]
async fn the_static_client_carries_a_content_security_policy() {
    let app = spawn_app().await;
    for path in ["/", "/js/app.js", "/api/nothing"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        let headers = response.headers();
        let policy = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
}

/// Requests that trickle in, headers near the 8 KiB read size and keep-alive reuse all
/// parse (kept from when the HTTP/1 dispatcher was a patched fork).
#[tokio::test]
async fn requests_trickling_in_and_kept_alive_still_parse() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let host = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let request = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    for byte in request.as_bytes() {
        socket.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(7_900)
    );
    socket.write_all(big.as_bytes()).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answers = String::new();
    let mut buf = [0u8; 4096];
    while answers.matches("\"status\":\"ok\"").count() < 3 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed early after: {answers}");
        answers.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 3, "{answers}");
}
