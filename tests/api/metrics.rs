//! `GET /metrics` on `METRICS_BIND_ADDR`: Prometheus text, by route pattern, on a listener of
//! its own.

use reqwest::StatusCode;

use crate::fixtures::{self, Upload};
use crate::helpers::{eventually, expect_error, expect_json, metric, spawn_app, spawn_app_with};
use crate::ws::WsClient;

async fn scrape(address: &str) -> String {
    let response = reqwest::get(format!("{address}/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test]
async fn requests_sockets_uploads_and_the_database_are_counted_by_route_pattern() {
    let app = spawn_app_with(&[
        ("METRICS_BIND_ADDR", "127.0.0.1:0"),
        ("MAX_FILE_SIZE_MB", "1"),
    ])
    .await;
    let metrics = app.metrics_address.clone().expect("a metrics listener");
    let (alice, _bob, channel) = app.two_members().await;
    for _ in 0..2 {
        let page = app
            .get(&format!("/api/channels/{channel}/messages"), &alice.token)
            .await;
        assert_eq!(page.status(), StatusCode::OK);
    }
    let nowhere = app.get("/api/nowhere", &alice.token).await;
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    let (mut socket, _) = WsClient::login(&app, &alice).await;

    let png = fixtures::png(2000);
    let png_len = png.len();
    let accepted = app
        .post_files(
            &alice,
            channel,
            "a picture",
            &[Upload::new("a.png", "image/png", png)],
        )
        .await;
    expect_json(accepted, StatusCode::CREATED).await;
    // Both events of that post reach the socket before anything is scraped.
    socket.next_of("message_created").await;
    socket.next_of("file_upload_complete").await;
    let page = Upload::new(
        "page.png",
        "image/png",
        b"<html><script>x</script>".to_vec(),
    );
    let refused = app.post_files(&alice, channel, "a page", &[page]).await;
    expect_error(
        refused,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_file_type",
    )
    .await;
    let huge = Upload::new("big.png", "image/png", fixtures::png(1024 * 1024 + 1));
    let too_large = app.post_files(&alice, channel, "too big", &[huge]).await;
    expect_error(too_large, StatusCode::PAYLOAD_TOO_LARGE, "file_too_large").await;

    // The hub counts a fan-out once it has written it: let it finish the one above.
    app.state.events.hub().sync().await;
    let text = scrape(&metrics).await;
    let requests = |method: &str, route: &str, status: u16| {
        value(
            &text,
            &format!(
                r#"chatserver_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
            ),
        )
    };
    assert_eq!(requests("POST", "/api/auth/register", 201), 2.0);
    assert_eq!(requests("GET", "/api/channels/{id}/messages", 200), 2.0);
    assert_eq!(requests("POST", "/api/channels/{id}/messages", 201), 1.0);
    assert_eq!(requests("POST", "/api/channels/{id}/messages", 415), 1.0);
    assert_eq!(requests("POST", "/api/channels/{id}/messages", 413), 1.0);
    assert_eq!(requests("GET", "unmatched", 404), 1.0);
    assert_eq!(requests("GET", "/api/ws", 101), 1.0);
    assert_eq!(
        value(
            &text,
            r#"chatserver_http_request_duration_seconds_count{method="GET",route="/api/channels/{id}/messages",status="200"}"#
        ),
        2.0
    );
    // Patterns, never paths: label values stay bounded.
    assert!(
        !text.contains(&format!("/api/channels/{channel}/")),
        "a raw path in\n{text}"
    );

    assert_eq!(value(&text, "chatserver_websockets_open"), 1.0);
    assert_eq!(
        value(&text, "chatserver_websocket_events_delivered_total"),
        2.0
    );
    assert_eq!(
        value(&text, "chatserver_upload_bytes_total"),
        png_len as f64
    );
    let refusals = |reason: &str| {
        value(
            &text,
            &format!(r#"chatserver_upload_refusals_total{{reason="{reason}"}}"#),
        )
    };
    assert_eq!(refusals("unsupported_file_type"), 1.0);
    assert_eq!(refusals("file_too_large"), 1.0);
    // The accepted file and the one cut off at the limit went to the store; the page never
    // did. A body over the limit is the client's doing, not a store error.
    assert_eq!(
        value(
            &text,
            r#"chatserver_store_operation_duration_seconds_count{operation="put"}"#
        ),
        2.0
    );
    assert!(!text.contains("chatserver_store_errors_total{"), "{text}");
    assert!(
        value(
            &text,
            r#"chatserver_db_query_duration_seconds_count{kind="write"}"#
        ) >= 4.0
    );
    assert!(
        value(
            &text,
            r#"chatserver_db_query_duration_seconds_count{kind="read"}"#
        ) >= 2.0
    );
    assert!(!text.contains("chatserver_db_errors_total{"), "{text}");
    let max = if app.backend() == "postgres" {
        16.0
    } else {
        8.0
    };
    assert_eq!(value(&text, "chatserver_db_pool_max_connections"), max);
    let idle = value(&text, r#"chatserver_db_pool_connections{state="idle"}"#);
    let in_use = value(&text, r#"chatserver_db_pool_connections{state="in_use"}"#);
    assert!(idle + in_use >= 1.0 && idle + in_use <= max, "{text}");

    // The client closes (and hangs up): the server answers 1000, and the socket is no longer
    // counted.
    socket.close().await;
    drop(socket);
    let closed =
        async || metric(&scrape(&metrics).await, "chatserver_websockets_open") == Some(0.0);
    assert!(eventually(closed).await, "the socket is still counted open");
    let text = scrape(&metrics).await;
    assert_eq!(
        value(&text, r#"chatserver_websocket_closes_total{code="1000"}"#),
        1.0
    );
}

#[tokio::test]
async fn metrics_are_not_served_on_the_public_listener() {
    let app = spawn_app_with(&[("METRICS_BIND_ADDR", "127.0.0.1:0")]).await;
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    expect_error(public, StatusCode::NOT_FOUND, "not_found").await;
    // The metrics listener serves nothing else.
    let metrics = app.metrics_address.clone().unwrap();
    let other = reqwest::get(format!("{metrics}/api/channels"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert!(
        scrape(&metrics)
            .await
            .contains("chatserver_http_requests_total")
    );
}

#[tokio::test]
async fn without_metrics_bind_addr_there_is_no_metrics_listener() {
    let app = spawn_app().await;
    assert_eq!(app.metrics_address, None);
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
}
