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
