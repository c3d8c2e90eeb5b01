//! `GET /api/openapi.json`: generated from the handlers, and checked here against the routes
//! the app registers (read from `src/routes/`, where every route goes through `endpoint`).

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_json, spawn_app};

/// `(method, path)` of every route registered in `src/routes/`: each `endpoint("path",
/// vec![(Method::X, ...), ...])` call. `health.rs` is mounted at the root, the rest under
/// `/api` (src/routes/mod.rs).
fn registered_routes() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file == "mod.rs" {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let scope = if file == "health.rs" { "" } else { "/api" };
        for call in source.split("endpoint(").skip(1) {
            let Some(rest) = call.trim_start().strip_prefix('"') else {
                continue; // the function's own definition
            };
            // `{name:regex}` segments are documented as `{name}`.
            let route = strip_patterns(&rest[..rest.find('"').unwrap()]);
            // The methods of this call: up to the `vec![...]`'s closing bracket.
            let methods = &rest[..rest.find("],").or_else(|| rest.find("])")).unwrap()];
            for method in methods.split("Method::").skip(1) {
                let name: String = method
                    .chars()
                    .take_while(char::is_ascii_uppercase)
                    .collect();
                routes.insert((name.to_lowercase(), format!("{scope}{route}")));
            }
        }
    }
    routes
}

/// `/a/{x:[^/]*}` -> `/a/{x}` (a pattern may hold `/`, so not split on it).
fn strip_patterns(route: &str) -> String {
    let mut out = String::new();
    let mut in_pattern = false;
    let mut depth = 0;
    for c in route.chars() {
        match c {
            '{' => {
                depth += 1;
                if !in_pattern {
                    out.push(c);
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    in_pattern = false;
                    out.push(c);
                }
            }
            ':' if depth == 1 => in_pattern = true,
            _ if !in_pattern => out.push(c),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn the_document_describes_exactly_the_registered_routes() {
    let app = spawn_app().await;
    // Public, like the health checks: no token.
    let response = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    let doc = expect_json(response, StatusCode::OK).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let registered = registered_routes();
    assert!(
        registered.len() >= 20,
        "the scan found too little: {registered:?}"
    );
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "registered, not documented: {undocumented:?}"
    );
    assert!(
        unregistered.is_empty(),
        "documented, not registered: {unregistered:?}"
    );
}

/// Every `$ref` names a schema the document defines, every operation says what success
/// looks like, and the ones behind a token say so.
#[tokio::test]
async fn the_document_is_whole() {
    let app = spawn_app().await;
    let doc = expect_json(
        app.client
            .get(app.url("/api/openapi.json"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let name = reference.strip_prefix("#/components/schemas/").unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {reference}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let public = [
        "/healthz",
        "/readyz",
        "/api/auth/register",
        "/api/auth/login",
        "/api/config",
    ];
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let statuses: Vec<&String> =
                operation["responses"].as_object().unwrap().keys().collect();
            assert!(
                statuses
                    .iter()
                    .any(|s| s.starts_with('2') || s.starts_with('1') || s.starts_with('3')),
                "{method} {path}: no success response in {statuses:?}"
            );
            let needs_token = !public.contains(&path.as_str())
                && !path.ends_with("/content")
                && !path.ends_with("/thumbnail")
                // The local store's part URL: its signed token is the credential.
                && !path.ends_with("/parts/{part_number}")
                && path != "/api/openapi.json"
                && path != "/api/ws";
            assert_eq!(
                operation["security"].is_array(),
                needs_token,
                "{method} {path}: security"
            );
        }
    }
}

fn collect_refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target.clone()),
                    _ => collect_refs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, found)),
        _ => {}
    }
}
