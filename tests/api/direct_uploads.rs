//! Direct uploads (`POST /api/uploads` ...): the client sends the bytes straight to the
//! store (presigned S3 URLs, or the local store's signed part route), on both stores.
//! Parts are S3's minimum, 5 MiB, on S3 (s3s-fs enforces it at `CompleteMultipartUpload`, as
//! AWS does) and 64 KiB on the local store (`DIRECT_UPLOAD_PART_SIZE_BYTES`), which keeps
//! those tests fast.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixtures;
use crate::helpers::{
    StoreKind, TestApp, TestUser, expect_error, expect_json, for_each_store, recv_within,
    spawn_app_on,
};

/// The part size of the app's direct uploads.
fn part(app: &TestApp) -> usize {
    app.state.settings.store.direct_upload_part_size as usize
}

async fn app_on(store: StoreKind, extra: &[(&str, &str)]) -> TestApp {
    let part = match store {
        StoreKind::Local => "65536",
        _ => "5242880",
    };
    let mut settings = vec![("DIRECT_UPLOAD_PART_SIZE_BYTES", part)];
    settings.extend_from_slice(extra);
    spawn_app_on(store, &settings).await
}

async fn create(
    app: &TestApp,
    user: &TestUser,
    channel: i64,
    name: &str,
    size: usize,
) -> reqwest::Response {
    app.post(
        "/api/uploads",
        &user.token,
        json!({"channel_id": channel, "file_name": name, "file_size": size, "content_type": "image/png"}),
    )
    .await
}

async fn created(app: &TestApp, user: &TestUser, channel: i64, name: &str, size: usize) -> Value {
    expect_json(
        create(app, user, channel, name, size).await,
        StatusCode::CREATED,
    )
    .await
}

/// `(part_number, url)` for these parts.
async fn urls(app: &TestApp, user: &TestUser, id: &str, parts: &[i32]) -> Vec<(i32, String)> {
    let body = expect_json(
        app.post(
            &format!("/api/uploads/{id}/parts"),
            &user.token,
            json!({ "part_numbers": parts }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    body["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["part_number"].as_i64().unwrap() as i32,
                p["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// PUTs a part as a browser would (no bearer token: the URL is the credential); its ETag.
async fn put(url: &str, bytes: &[u8]) -> reqwest::Response {
    reqwest::Client::new()
        .put(url)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn put_ok(url: &str, bytes: &[u8]) -> String {
    let response = put(url, bytes).await;
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        status.is_success(),
        "PUT {status}: {}",
        response.text().await.unwrap()
    );
    etag.expect("a part PUT answers its ETag")
}

/// Sends `bytes` as the parts `numbers` of upload `id`; their `{part_number, etag}`.
async fn send_parts(
    app: &TestApp,
    user: &TestUser,
    id: &str,
    bytes: &[u8],
    numbers: &[i32],
) -> Vec<Value> {
    let mut sent = Vec::new();
    for (n, url) in urls(app, user, id, numbers).await {
        let start = (n as usize - 1) * part(app);
        let end = (start + part(app)).min(bytes.len());
        let etag = put_ok(&url, &bytes[start..end]).await;
        sent.push(json!({"part_number": n, "etag": etag}));
    }
    sent
}

async fn complete(app: &TestApp, user: &TestUser, id: &str, parts: &[Value]) -> reqwest::Response {
    app.post(
        &format!("/api/uploads/{id}/complete"),
        &user.token,
        json!({ "parts": parts }),
    )
    .await
}

fn part_numbers(app: &TestApp, bytes: &[u8]) -> Vec<i32> {
    (1..=bytes.len().div_ceil(part(app)) as i32).collect()
}

/// Creates, sends every part and completes; the `ready` upload.
pub(crate) async fn upload(
    app: &TestApp,
    user: &TestUser,
    channel: i64,
    name: &str,
    bytes: &[u8],
) -> Value {
    let upload = created(app, user, channel, name, bytes.len()).await;
    let id = upload["id"].as_str().unwrap();
    let sent = send_parts(app, user, id, bytes, &part_numbers(app, bytes)).await;
    expect_json(complete(app, user, id, &sent).await, StatusCode::OK).await
}

pub(crate) async fn attach(
    app: &TestApp,
    user: &TestUser,
    channel: i64,
    ids: &[&str],
) -> reqwest::Response {
    app.post(
        &format!("/api/channels/{channel}/messages"),
        &user.token,
        json!({"content": "", "upload_ids": ids}),
    )
    .await
}

/// GETs a download link like a plain client (following S3's redirect).
async fn download(url: &str) -> Vec<u8> {
    let response = reqwest::Client::new().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.bytes().await.unwrap().to_vec()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn message_count(app: &TestApp, user: &TestUser, channel: i64) -> usize {
    let page = expect_json(
        app.get(&format!("/api/channels/{channel}/messages"), &user.token)
            .await,
        StatusCode::OK,
    )
    .await;
    page["messages"].as_array().unwrap().len()
}

/// Objects in the store under the direct uploads' staging prefix.
pub(crate) async fn staged_objects(app: &TestApp) -> Vec<String> {
    let prefix = app.state.store.staging_prefix();
    app.object_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect()
}

async fn pending_multipart(app: &TestApp) -> usize {
    match &app.s3 {
        Some(s3) => s3.pending_multipart_uploads().await,
        None => 0,
    }
}

/// Local parts waiting under `files/parts/` (the local store's counterpart of multipart
/// uploads).
fn local_parts(app: &TestApp) -> usize {
    let dir = app.data_dir().join("files").join("parts");
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| std::fs::read_dir(e.unwrap().path()).map_or(0, |p| p.count()))
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------

async fn single_and_multi_part_files_round_trip_and_attach_with_events(store: StoreKind) {
    let app = app_on(store, &[]).await;
    let (alice, bob, channel) = app.two_members().await;
    let small = fixtures::png(1000);
    let large = fixtures::png(2 * part(&app) + 1000);
    assert_eq!(part_numbers(&app, &large), [1, 2, 3]);
    let mut ids = Vec::new();
    for (name, bytes) in [("small.png", &small), ("large.png", &large)] {
        let ready = upload(&app, &alice, channel, name, bytes).await;
        assert_eq!(ready["state"], "ready", "{ready}");
        assert_eq!(ready["file"]["content_type"], "image/png");
        assert_eq!(ready["file"]["file_size"], bytes.len());
        assert_eq!(ready["file"]["sha256"], sha256_hex(bytes));
        assert_eq!(ready["part_count"], part_numbers(&app, bytes).len());
        ids.push(ready["id"].as_str().unwrap().to_owned());
    }
    // Completing again answers the same.
    let again = expect_json(complete(&app, &alice, &ids[0], &[]).await, StatusCode::OK).await;
    assert_eq!(again["state"], "ready");

    let mut events = app.events().await;
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let message = expect_json(
        attach(&app, &alice, channel, &id_refs).await,
        StatusCode::CREATED,
    )
    .await;
    let files = message["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["file_name"], "small.png");
    assert_eq!(files[1]["file_name"], "large.png");
    let created = app.render(&recv_within(&mut events, "message_created").await, &bob);
    assert_eq!(created["type"], "message_created");
    assert_eq!(created["data"]["id"], message["id"]);
    for (file, bytes) in files.iter().zip([&small, &large]) {
        let event = app.render(
            &recv_within(&mut events, "file_upload_complete").await,
            &bob,
        );
        assert_eq!(event["type"], "file_upload_complete");
        assert_eq!(event["data"]["id"], file["id"]);
        // Byte-exact, through bob's own link.
        let got = download(event["data"]["url"].as_str().unwrap()).await;
        assert_eq!(sha256_hex(&got), sha256_hex(bytes));
        assert_eq!(&got, bytes);
    }
    app.assert_no_more_events(&mut events, &alice, channel)
        .await;
    // Attached: the upload shows its file.
    let shown = expect_json(
        app.get(&format!("/api/uploads/{}", ids[1]), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["state"], "attached");
    assert_eq!(shown["file"]["id"], files[1]["id"]);
    assert_eq!(pending_multipart(&app).await, 0);
    assert_eq!(local_parts(&app), 0);
}

async fn an_upload_resumes_with_the_parts_the_store_holds(store: StoreKind) {
    let app = app_on(store, &[]).await;
    let (alice, _, channel) = app.two_members().await;
    let bytes = fixtures::png(2 * part(&app) + 500);
    let upload = created(&app, &alice, channel, "r.png", bytes.len()).await;
    let id = upload["id"].as_str().unwrap();
    assert_eq!(upload["parts_done"], json!([]));
    let mut sent = send_parts(&app, &alice, id, &bytes, &[1, 3]).await;
    // "After a reload": the upload as the store reports it.
    let shown = expect_json(
        app.get(&format!("/api/uploads/{id}"), &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["parts_done"], json!([1, 3]));
    // Completing now: 409 upload_incomplete, and it stays pending.
    expect_error(
        complete(&app, &alice, id, &sent).await,
        StatusCode::CONFLICT,
        "upload_incomplete",
    )
    .await;
    // New URLs for the missing part only.
    sent.extend(send_parts(&app, &alice, id, &bytes, &[2]).await);
    let ready = expect_json(complete(&app, &alice, id, &sent).await, StatusCode::OK).await;
    assert_eq!(ready["file"]["sha256"], sha256_hex(&bytes));
    // Part numbers outside the upload are refused.
    for bad in [0, 4] {
        expect_error(
            app.post(
                &format!("/api/uploads/{id}/parts"),
                &alice.token,
                json!({"part_numbers": [bad]}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
}

/// The bytes a test sends as part `n`.
type PartOf<'a> = Box<dyn Fn(i32) -> Vec<u8> + 'a>;

async fn wrong_sizes_fail_with_size_mismatch_and_leave_nothing(store: StoreKind) {
    let app = app_on(store, &[]).await;
    let (alice, _, channel) = app.two_members().await;
    let part = part(&app);
    let bytes = fixtures::png(2 * part + 500);
    // A middle part shorter than declared; a last part longer; a single part short.
    let cases: [(&str, usize, PartOf); 3] = [
        (
            "short-middle",
            bytes.len(),
            Box::new(|n| {
                let start = (n as usize - 1) * part;
                let end = (start + part).min(bytes.len());
                if n == 2 {
                    bytes[start..end - 10].to_vec()
                } else {
                    bytes[start..end].to_vec()
                }
            }),
        ),
        (
            "long-last",
            bytes.len(),
            Box::new(|n| {
                let start = (n as usize - 1) * part;
                let end = (start + part).min(bytes.len());
                let mut part = bytes[start..end].to_vec();
                if n == 3 {
                    part.extend_from_slice(&[0u8; 100]);
                }
                part
            }),
        ),
        ("wrong-total", 1000, Box::new(|_| fixtures::png(500))),
    ];
    for (name, declared, part_of) in cases {
        let upload = created(&app, &alice, channel, name, declared).await;
        let id = upload["id"].as_str().unwrap();
        let count = upload["part_count"].as_i64().unwrap() as i32;
        let numbers: Vec<i32> = (1..=count).collect();
        let mut sent = Vec::new();
        for (n, url) in urls(&app, &alice, id, &numbers).await {
            let response = put(&url, &part_of(n)).await;
            // S3 takes any length; the local store cuts a part off past its length (413).
            if let Some(etag) = response.headers().get("etag") {
                sent.push(json!({"part_number": n, "etag": etag.to_str().unwrap()}));
            } else {
                assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{name}");
            }
        }
        // The local store's 413 part still lists (cut off): the client's list names it.
        if sent.len() < count as usize {
            let shown = expect_json(
                app.get(&format!("/api/uploads/{id}"), &alice.token).await,
                StatusCode::OK,
            )
            .await;
            assert!(
                !shown["parts_done"].as_array().unwrap().contains(&json!(3)),
                "{name}: {shown}"
            );
        }
        let refused = complete(&app, &alice, id, &sent).await;
        if refused.status() == StatusCode::CONFLICT {
            // The local store: the cut-off part's ETag was never sent; name the stored one.
            let etag = local_etag(&app, id, 3);
            sent.push(json!({"part_number": 3, "etag": etag}));
            expect_error(
                complete(&app, &alice, id, &sent).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                "size_mismatch",
            )
            .await;
        } else {
            expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "size_mismatch").await;
        }
        let shown = expect_json(
            app.get(&format!("/api/uploads/{id}"), &alice.token).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(shown["state"], "failed", "{name}");
        // Asked again: the same answer.
        expect_error(
            complete(&app, &alice, id, &sent).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "size_mismatch",
        )
        .await;
    }
    assert_eq!(staged_objects(&app).await, Vec::<String>::new());
    assert_eq!(pending_multipart(&app).await, 0);
    assert_eq!(local_parts(&app), 0);
    // Failed uploads hold no quota and count as done.
    let storage = expect_json(
        app.get("/api/me/storage", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(storage["used_bytes"], 0);
}

/// The ETag of a local part as stored (`files/parts/{id}/{n}.{etag}`).
fn local_etag(app: &TestApp, id: &str, n: i32) -> String {
    let dir = app.data_dir().join("files").join("parts").join(id);
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find_map(|name| name.strip_prefix(&format!("{n}.")).map(str::to_owned))
        .expect("the part is stored")
}

async fn html_declared_as_png_is_refused_at_complete_and_deleted(store: StoreKind) {
    let app = app_on(store, &[]).await;
    let (alice, _, channel) = app.two_members().await;
    let html = b"<!doctype html><html><body><script>alert(1)</script></body></html>".to_vec();
    let upload = created(&app, &alice, channel, "cat.png", html.len()).await;
    let id = upload["id"].as_str().unwrap();
    let sent = send_parts(&app, &alice, id, &html, &[1]).await;
    expect_error(
        complete(&app, &alice, id, &sent).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_file_type",
    )
    .await;
    expect_error(
        complete(&app, &alice, id, &sent).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_file_type",
    )
    .await;
    assert_eq!(staged_objects(&app).await, Vec::<String>::new());
    expect_error(
        attach(&app, &alice, channel, &[id]).await,
        StatusCode::BAD_REQUEST,
        "invalid_upload",
    )
    .await;
}

async fn another_users_upload_is_404_everywhere_and_invalid_to_attach(store: StoreKind) {
    let app = app_on(store, &[]).await;
    let (alice, bob, channel) = app.two_members().await;
    let bytes = fixtures::png(1000);
    let upload = created(&app, &alice, channel, "a.png", bytes.len()).await;
    let id = upload["id"].as_str().unwrap();
    let paths = [
        (
            reqwest::Method::GET,
            format!("/api/uploads/{id}"),
            json!(null),
        ),
        (
            reqwest::Method::POST,
            format!("/api/uploads/{id}/parts"),
            json!({"part_numbers": [1]}),
        ),
        (
            reqwest::Method::POST,
            format!("/api/uploads/{id}/complete"),
            json!({"parts": []}),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/uploads/{id}"),
            json!(null),
        ),
    ];
    let check = async |user: &TestUser| {
        for (method, path, body) in &paths {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .bearer_auth(&user.token);
            if !body.is_null() {
                request = request.json(body);
            }
            expect_error(
                request.send().await.unwrap(),
                StatusCode::NOT_FOUND,
                "not_found",
            )
            .await;
        }
    };
    check(&bob).await;
    // Still alice's, untouched: she completes it; bob cannot attach it, even ready.
    let sent = send_parts(&app, &alice, id, &bytes, &[1]).await;
    expect_json(complete(&app, &alice, id, &sent).await, StatusCode::OK).await;
    check(&bob).await;
    expect_error(
        attach(&app, &bob, channel, &[id]).await,
        StatusCode::BAD_REQUEST,
        "invalid_upload",
    )
    .await;
    expect_error(
        attach(&app, &alice, channel, &["no-such-upload"]).await,
        StatusCode::BAD_REQUEST,
        "invalid_upload",
    )
    .await;
    assert_eq!(message_count(&app, &alice, channel).await, 0);
    // A channel alice cannot see: 404 at creation.
    let secret = app.create_channel(&bob, "secret", true).await;
    expect_error(
        create(&app, &alice, secret, "x.png", 10).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

async fn an_upload_attaches_once_and_only_to_its_channel(store: StoreKind) {
    let app = app_on(store, &[]).await;
    let (alice, _, channel) = app.two_members().await;
    let other = app.create_channel(&alice, "other", false).await;
    let ready = upload(&app, &alice, channel, "once.png", &fixtures::png(1000)).await;
    let id = ready["id"].as_str().unwrap();
    let second = upload(&app, &alice, channel, "two.png", &fixtures::png(800)).await;
    let second_id = second["id"].as_str().unwrap();
    expect_error(
        attach(&app, &alice, other, &[id]).await,
        StatusCode::BAD_REQUEST,
        "invalid_upload",
    )
    .await;
    // The same upload twice in one message: refused, and the other upload stays ready.
    expect_error(
        attach(&app, &alice, channel, &[second_id, id, id]).await,
        StatusCode::BAD_REQUEST,
        "invalid_upload",
    )
    .await;
    assert_eq!(message_count(&app, &alice, channel).await, 0);
    assert_eq!(message_count(&app, &alice, other).await, 0);
    expect_json(
        attach(&app, &alice, channel, &[id]).await,
        StatusCode::CREATED,
    )
    .await;
    expect_error(
        attach(&app, &alice, channel, &[id]).await,
        StatusCode::BAD_REQUEST,
        "invalid_upload",
    )
    .await;
    assert_eq!(message_count(&app, &alice, channel).await, 1);
    expect_json(
        attach(&app, &alice, channel, &[second_id]).await,
        StatusCode::CREATED,
    )
    .await;
    // Quota: each file counted once.
    let storage = expect_json(
        app.get("/api/me/storage", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        storage["used_bytes"],
        fixtures::png(1000).len() + fixtures::png(800).len()
    );
    assert_eq!(storage["file_count"], 2);
}

async fn the_sweeper_expires_stale_sessions_and_deletes_what_they_stored(store: StoreKind) {
    let app = app_on(store, &[("ORPHAN_MIN_AGE_SECONDS", "0")]).await;
    let (alice, _, channel) = app.two_members().await;
    let bytes = fixtures::png(2 * part(&app) + 100);
    // One pending with 2 of 3 parts sent, one ready and never attached.
    let pending = created(&app, &alice, channel, "p.png", bytes.len()).await;
    let pending_id = pending["id"].as_str().unwrap();
    send_parts(&app, &alice, pending_id, &bytes, &[1, 2]).await;
    let ready = upload(&app, &alice, channel, "r.png", &fixtures::png(500)).await;
    let ready_id = ready["id"].as_str().unwrap();
    // The parts of a session whose cleanup failed (no live row names them): swept.
    let abandoned = app
        .data_dir()
        .join("files/parts/0123456789abcdef0123456789abcdef");
    if store == StoreKind::Local {
        std::fs::create_dir_all(&abandoned).unwrap();
        std::fs::write(abandoned.join("1.etag"), b"left behind").unwrap();
        assert_eq!(local_parts(&app), 3);
    }
    // Before they expire, the sweeper (with no minimum orphan age) keeps what they stored:
    // neither the object nor the multipart upload (nor the local parts) is taken for an
    // orphan.
    let sweeper = chatserver::gc::Sweeper::from(&app.state);
    let report = chatserver::gc::sweep(&sweeper).await.unwrap();
    assert_eq!(
        (
            report.upload_sessions_expired,
            report.orphans_removed,
            report.stale_uploads_aborted
        ),
        (0, 0, usize::from(store == StoreKind::Local)),
        "{report:?}"
    );
    assert!(!abandoned.exists());
    assert_eq!(staged_objects(&app).await.len(), 1);
    if store == StoreKind::Local {
        assert_eq!(local_parts(&app), 2);
    } else {
        assert_eq!(pending_multipart(&app).await, 1);
    }
    // Past UPLOAD_SESSION_TTL_SECONDS (moved back in the database rather than waited for).
    app.state
        .db
        .write(|conn| {
            use chatserver::db::schema::upload_sessions::dsl::*;
            use diesel::prelude::*;
            let past = chatserver::db::models::now() - chrono::TimeDelta::seconds(1);
            Ok(diesel::update(upload_sessions)
                .set(expires_at.eq(past))
                .execute(conn)?)
        })
        .await
        .unwrap();
    let report = chatserver::gc::sweep(&sweeper).await.unwrap();
    assert_eq!(report.upload_sessions_expired, 2, "{report:?}");
    assert_eq!(staged_objects(&app).await, Vec::<String>::new());
    assert_eq!(pending_multipart(&app).await, 0);
    assert_eq!(local_parts(&app), 0);
    for id in [pending_id, ready_id] {
        let shown = expect_json(
            app.get(&format!("/api/uploads/{id}"), &alice.token).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(shown["state"], "expired");
    }
    expect_error(
        attach(&app, &alice, channel, &[ready_id]).await,
        StatusCode::BAD_REQUEST,
        "invalid_upload",
    )
    .await;
}

async fn concurrent_completes_make_one_file(store: StoreKind) {
    let app = app_on(store, &[]).await;
    let (alice, _, channel) = app.two_members().await;
    let bytes = fixtures::png(2 * part(&app) + 100);
    let upload = created(&app, &alice, channel, "c.png", bytes.len()).await;
    let id = upload["id"].as_str().unwrap();
    let sent = send_parts(&app, &alice, id, &bytes, &[1, 2, 3]).await;
    let calls: Vec<_> = (0..4).map(|_| complete(&app, &alice, id, &sent)).collect();
    let answers = futures_util::future::join_all(calls).await;
    for answer in answers {
        let body = expect_json(answer, StatusCode::OK).await;
        assert_eq!(body["state"], "ready");
        assert_eq!(body["file"]["sha256"], sha256_hex(&bytes));
    }
    assert_eq!(staged_objects(&app).await.len(), 1);
    expect_json(
        attach(&app, &alice, channel, &[id]).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(message_count(&app, &alice, channel).await, 1);
}

async fn pending_uploads_are_limited_and_counted_against_the_quota(store: StoreKind) {
    let app = app_on(
        store,
        &[("MAX_PENDING_UPLOADS", "2"), ("USER_QUOTA_MB", "12")],
    )
    .await;
    let (alice, _, channel) = app.two_members().await;
    let mib = 1024 * 1024;
    let first = created(&app, &alice, channel, "1.png", 7 * mib).await;
    // The declared size counts at once: 7 MiB + 7 MiB > 12 MiB.
    expect_error(
        create(&app, &alice, channel, "2.png", 7 * mib).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "quota_exceeded",
    )
    .await;
    created(&app, &alice, channel, "2.png", 1000).await;
    expect_error(
        create(&app, &alice, channel, "3.png", 1000).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    // Cancelling gives the place and the bytes back, and ends its multipart upload.
    let response = app
        .delete(
            &format!("/api/uploads/{}", first["id"].as_str().unwrap()),
            &alice.token,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(pending_multipart(&app).await, 0);
    created(&app, &alice, channel, "3.png", 7 * mib).await;
    // Declared sizes over MAX_FILE_SIZE_MB, or under 1: refused before anything starts.
    expect_error(
        create(&app, &alice, channel, "big.png", 51 * 1024 * 1024).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "file_too_large",
    )
    .await;
    expect_error(
        create(&app, &alice, channel, "empty.png", 0).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_eq!(
        pending_multipart(&app).await,
        if store == StoreKind::Local { 0 } else { 1 }
    );
}

for_each_store!(
    single_and_multi_part_files_round_trip_and_attach_with_events,
    an_upload_resumes_with_the_parts_the_store_holds,
    wrong_sizes_fail_with_size_mismatch_and_leave_nothing,
    html_declared_as_png_is_refused_at_complete_and_deleted,
    another_users_upload_is_404_everywhere_and_invalid_to_attach,
    an_upload_attaches_once_and_only_to_its_channel,
    the_sweeper_expires_stale_sessions_and_deletes_what_they_stored,
    concurrent_completes_make_one_file,
    pending_uploads_are_limited_and_counted_against_the_quota,
);

#[tokio::test]
async fn the_config_says_direct_uploads_are_on() {
    let app = app_on(StoreKind::Local, &[]).await;
    let config = expect_json(
        app.client.get(app.url("/api/config")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(config["direct_uploads"], true);
}

#[tokio::test]
async fn a_retried_creation_with_an_idempotency_key_opens_one_upload() {
    let app = app_on(StoreKind::Local, &[("MAX_PENDING_UPLOADS", "1")]).await;
    let (alice, _, channel) = app.two_members().await;
    let body = json!({"channel_id": channel, "file_name": "a.png", "file_size": 1000});
    let send = || {
        app.client
            .post(app.url("/api/uploads"))
            .bearer_auth(&alice.token)
            .header("Idempotency-Key", "upload-1")
            .json(&body)
            .send()
    };
    let first = expect_json(send().await.unwrap(), StatusCode::CREATED).await;
    let replay = send().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay = expect_json(replay, StatusCode::CREATED).await;
    assert_eq!(replay["id"], first["id"]);
    // One upload open, not two: a new one is beyond MAX_PENDING_UPLOADS = 1.
    expect_error(
        create(&app, &alice, channel, "b.png", 10).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
}

/// `AWS_S3_PUBLIC_ENDPOINT`: the server talks to the store at one address, browsers at
/// another (here the same S3 server as `localhost` instead of `127.0.0.1`). Part URLs and
/// download links name the public one, and work there: SigV4 signed its host.
#[tokio::test]
async fn presigned_urls_name_the_public_endpoint_and_work_there() {
    let app = app_on(StoreKind::S3, &[]).await;
    let private = app.s3.as_ref().unwrap().endpoint.clone();
    assert!(private.contains("127.0.0.1"), "{private}");
    let public = private.replace("127.0.0.1", "localhost");
    let app = app
        .spawn_peer(&[("AWS_S3_PUBLIC_ENDPOINT", public.as_str())])
        .await;
    let (alice, bob, channel) = app.two_members().await;
    let bytes = fixtures::png(1000);
    let upload = created(&app, &alice, channel, "public.png", bytes.len()).await;
    let id = upload["id"].as_str().unwrap();
    let mut sent = Vec::new();
    for (n, url) in urls(&app, &alice, id, &[1]).await {
        assert!(url.starts_with(&public), "{url}");
        sent.push(json!({"part_number": n, "etag": put_ok(&url, &bytes).await}));
    }
    expect_json(complete(&app, &alice, id, &sent).await, StatusCode::OK).await;
    let message = expect_json(
        attach(&app, &alice, channel, &[id]).await,
        StatusCode::CREATED,
    )
    .await;
    let file_id = message["files"][0]["id"].as_i64().unwrap();
    let link = expect_json(
        app.get(&format!("/api/files/{file_id}"), &bob.token).await,
        StatusCode::OK,
    )
    .await;
    // The app's link redirects to the store, presigned for the public endpoint.
    let response = app
        .client
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&public), "{location}");
    assert_eq!(download(&location).await, bytes);
}

/// The store's reads that `complete` stands on, on S3 (the in-process server, which can be
/// stopped): a new upload's key is under the deployment's `uploads/` prefix; a ranged read of
/// a missing object is `None`, of an empty one empty bytes, of a large one exactly the
/// limit (over several chunks); a one-part upload lists no part before it is put. With the
/// server gone each is an error (503), never an empty answer a check would trust.
#[tokio::test]
async fn the_stores_direct_reads_tell_missing_empty_and_unavailable_apart() {
    use chatserver::storage::{DirectTarget, Presentation};
    let app = app_on(StoreKind::S3InProcess, &[]).await;
    let store = &app.state.store;
    let key = store.new_staging_key();
    let prefix = format!("{}/uploads/", store.key_prefix());
    assert!(key.starts_with(&prefix), "{key} is not under {prefix}");
    let target = || DirectTarget {
        key: &key,
        upload_id: None,
        session_id: "unused-on-s3",
    };
    assert_eq!(store.read_head(&key, 8192).await.unwrap(), None);
    assert!(store.direct_parts(target()).await.unwrap().is_empty());

    let presentation = Presentation::of("x.bin", "application/octet-stream");
    store
        .put_bytes(&key, &presentation, Vec::new().into())
        .await
        .unwrap();
    assert_eq!(
        store.read_head(&key, 8192).await.unwrap().as_deref(),
        Some(&[][..])
    );
    let big = fixtures::filler(3 << 20, 7);
    store
        .put_bytes(&key, &presentation, big.clone().into())
        .await
        .unwrap();
    let head = store.read_head(&key, 2 << 20).await.unwrap().unwrap();
    assert_eq!(head.len(), 2 << 20);
    assert!(head[..] == big[..2 << 20]);
    let parts = store.direct_parts(target()).await.unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].size, 3 << 20);

    app.s3.as_ref().unwrap().stop();
    assert!(store.read_head(&key, 8192).await.is_err());
    assert!(store.direct_parts(target()).await.is_err());
}
