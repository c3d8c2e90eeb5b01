//! Storage governance: per-user quotas (`USER_QUOTA_MB`) and retention, on both stores.

use chatserver::db::schema::{file_uploads, quota_reservations, users};
use diesel::prelude::*;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::fixtures::{self, Upload};
use crate::helpers::{
    StoreKind, TestApp, TestUser, eventually, expect_error, expect_json, for_each_store,
    spawn_app_on,
};

for_each_store!(
    an_upload_over_the_quota_is_refused_before_anything_is_stored,
    a_streamed_upload_is_stopped_at_the_quota,
    racing_uploads_and_deletes_never_exceed_the_quota_and_the_count_stays_exact,
    retention_deletes_files_past_the_shorter_limit_with_events_then_purges_them,
);

const KIB: usize = 1024;

/// `(counter, recount)`: `users.storage_used_bytes` and the sum of the user's live files.
async fn used_bytes(app: &TestApp, user: &TestUser) -> (i64, i64) {
    let id = user.id as i32;
    app.state
        .db
        .run(move |conn| {
            let counter = users::table
                .find(id)
                .select(users::storage_used_bytes)
                .first::<i64>(conn)?;
            let sizes: Vec<Option<i64>> = file_uploads::table
                .filter(file_uploads::uploaded_by.eq(id))
                .filter(file_uploads::is_deleted.eq(false))
                .select(file_uploads::file_size)
                .load(conn)?;
            Ok((counter, sizes.into_iter().flatten().sum()))
        })
        .await
        .unwrap()
}

async fn reservations(app: &TestApp) -> i64 {
    app.state
        .db
        .run(|conn| Ok(quota_reservations::table.count().get_result::<i64>(conn)?))
        .await
        .unwrap()
}

fn pdf(name: &str, len: usize) -> Upload {
    Upload::new(name, "application/pdf", fixtures::pdf(len))
}

async fn attach(
    app: &TestApp,
    user: &TestUser,
    message_id: &Value,
    file: Upload,
) -> reqwest::Response {
    app.attach_files(user, &message_id.to_string(), &[file])
        .send()
        .await
        .unwrap()
}

async fn an_upload_over_the_quota_is_refused_before_anything_is_stored(store: StoreKind) {
    let app = spawn_app_on(store, &[("USER_QUOTA_MB", "1")]).await;
    let (alice, bob, channel) = app.two_members().await;

    let storage = expect_json(
        app.get("/api/me/storage", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(storage["used_bytes"], 0);
    assert_eq!(storage["quota_bytes"], 1024 * 1024);
    assert_eq!(storage["file_count"], 0);

    let first = expect_json(
        app.post_files(&alice, channel, "first", &[pdf("a.pdf", 600 * KIB)])
            .await,
        StatusCode::CREATED,
    )
    .await;
    let storage = expect_json(
        app.get("/api/me/storage", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    let size = fixtures::pdf(600 * KIB).len() as i64;
    assert_eq!(storage["used_bytes"], size);
    assert_eq!(storage["file_count"], 1);
    let stored = app.object_keys().await;

    // 600 KiB more would make 1200 KiB: refused on the declared length, on both routes.
    let refused = app
        .post_files(&alice, channel, "second", &[pdf("b.pdf", 600 * KIB)])
        .await;
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    let message = app.post_message(&alice, channel, "files follow").await;
    let refused = attach(&app, &alice, &message["id"], pdf("c.pdf", 600 * KIB)).await;
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    assert_eq!(app.object_keys().await, stored, "nothing was stored");
    if store == StoreKind::Local {
        let temp = std::fs::read_dir(app.data_dir().join("files/tmp")).unwrap();
        assert_eq!(temp.count(), 0, "not even a temporary file");
    }
    // Quotas are per user.
    let bobs = app
        .post_files(&bob, channel, "bob's", &[pdf("d.pdf", 600 * KIB)])
        .await;
    expect_json(bobs, StatusCode::CREATED).await;

    // Deleting gives the space back.
    let file_id = first["files"][0]["id"].as_i64().unwrap();
    let deleted = app
        .delete(&format!("/api/files/{file_id}"), &alice.token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let storage = expect_json(
        app.get("/api/me/storage", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(storage["used_bytes"], 0);
    assert_eq!(storage["file_count"], 0);
    let again = attach(&app, &alice, &message["id"], pdf("c.pdf", 600 * KIB)).await;
    expect_json(again, StatusCode::CREATED).await;
    assert_eq!(used_bytes(&app, &alice).await, (size, size));
    assert!(eventually(async || reservations(&app).await == 0).await);
}

/// Without a `Content-Length` the request reserves what the user has left and is cut off
/// when it streams past it: nothing stored, the reservation given back.
async fn a_streamed_upload_is_stopped_at_the_quota(store: StoreKind) {
    let app = spawn_app_on(store, &[("USER_QUOTA_MB", "1")]).await;
    let (alice, _, channel) = app.two_members().await;
    let boundary = "QuOtAbOuNdArY";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nbig\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.pdf\"\r\n\
         Content-Type: application/pdf\r\n\r\n"
    );
    // 2 MiB of file, under MAX_FILE_SIZE_MB but over the 1 MiB quota.
    let chunks = futures_util::stream::iter(
        std::iter::once(head.into_bytes())
            .chain(std::iter::once(fixtures::pdf(64 * KIB)))
            .chain((0..31).map(|i| fixtures::filler(64 * KIB, i)))
            .chain(std::iter::once(
                format!("\r\n--{boundary}--\r\n").into_bytes(),
            ))
            .map(Ok::<_, std::io::Error>),
    );
    let response = app
        .client
        .post(app.url(&format!("/api/channels/{channel}/messages")))
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("the server answers before the body ends or after");
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    assert!(eventually(async || app.object_keys().await.is_empty()).await);
    assert_eq!(used_bytes(&app, &alice).await, (0, 0));
    assert!(eventually(async || reservations(&app).await == 0).await);
}

/// Two instances of one deployment, one user uploading eight files at once through both
/// while deleting: the quota holds at every moment (reservations are decided in the
/// database) and the counter equals a recount afterwards.
async fn racing_uploads_and_deletes_never_exceed_the_quota_and_the_count_stays_exact(
    store: StoreKind,
) {
    let settings = [
        ("USER_QUOTA_MB", "1"),
        ("MAX_CONCURRENT_UPLOADS_PER_USER", "16"),
    ];
    let one = spawn_app_on(store, &settings).await;
    let two = one.spawn_peer(&[]).await;
    let (alice, _, channel) = one.two_members().await;
    let kept = expect_json(
        one.post_files(&alice, channel, "kept", &[pdf("kept.pdf", 200 * KIB)])
            .await,
        StatusCode::CREATED,
    )
    .await;
    let doomed = expect_json(
        one.post_files(&alice, channel, "doomed", &[pdf("doomed.pdf", 200 * KIB)])
            .await,
        StatusCode::CREATED,
    )
    .await;
    let doomed_id = doomed["files"][0]["id"].as_i64().unwrap();

    let uploads = (0..8).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        let name = format!("race-{i}.pdf");
        let (alice, name) = (&alice, name);
        async move {
            app.post_files(alice, channel, &name, &[pdf(&name, 250 * KIB)])
                .await
        }
    });
    let delete = async {
        two.delete(&format!("/api/files/{doomed_id}"), &alice.token)
            .await
            .status()
    };
    let (answers, deleted) = tokio::join!(join_all(uploads), delete);
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    let mut accepted = 0;
    for answer in answers {
        match answer.status() {
            StatusCode::CREATED => accepted += 1,
            _ => {
                expect_error(answer, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
            }
        }
    }
    // 200 KiB kept + 250 KiB each within 1 MiB (each request also reserves its envelope):
    // at most three, and at least two (even before the delete freed its 200 KiB).
    assert!((2..=3).contains(&accepted), "{accepted} accepted");
    let (counter, recount) = used_bytes(&one, &alice).await;
    assert_eq!(counter, recount, "the counter drifted");
    let (kept_size, race_size) = (
        fixtures::pdf(200 * KIB).len(),
        fixtures::pdf(250 * KIB).len(),
    );
    assert_eq!(recount, (kept_size + accepted * race_size) as i64);
    assert!(recount <= 1024 * 1024);
    assert!(kept["files"][0]["id"].is_i64());
    assert!(eventually(async || reservations(&one).await == 0).await);
}

async fn patch_channel(
    app: &TestApp,
    user: &TestUser,
    channel: i64,
    body: Value,
) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/api/channels/{channel}")))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Moves a file's upload time back by `days`.
async fn age(app: &TestApp, file_id: i64, days: i64) {
    let id = file_id as i32;
    app.state
        .db
        .write(move |conn| {
            let when = chatserver::db::models::now() - chrono::TimeDelta::days(days);
            diesel::update(file_uploads::table.find(id))
                .set(file_uploads::uploaded_at.eq(when))
                .execute(conn)?;
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_creator_sets_a_channels_retention() {
    let app = spawn_app_on(StoreKind::Local, &[]).await;
    let (alice, bob, channel) = app.two_members().await;
    let outsider = app.register("outsider").await;
    let set = expect_json(
        patch_channel(
            &app,
            &alice,
            channel,
            serde_json::json!({ "retention_days": 7 }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(set["retention_days"], 7);
    let shown = expect_json(
        app.get(&format!("/api/channels/{channel}"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["retention_days"], 7);
    let by_member = patch_channel(
        &app,
        &bob,
        channel,
        serde_json::json!({ "retention_days": 1 }),
    )
    .await;
    expect_error(by_member, StatusCode::FORBIDDEN, "forbidden").await;
    let by_outsider = patch_channel(
        &app,
        &outsider,
        channel,
        serde_json::json!({ "retention_days": 1 }),
    )
    .await;
    expect_error(by_outsider, StatusCode::NOT_FOUND, "not_found").await;
    for bad in [
        serde_json::json!({ "retention_days": 0 }),
        serde_json::json!({ "retention_days": 40000 }),
        serde_json::json!({ "retention_days": "7" }),
        serde_json::json!({}),
    ] {
        let refused = patch_channel(&app, &alice, channel, bad.clone()).await;
        expect_error(refused, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let cleared = expect_json(
        patch_channel(
            &app,
            &alice,
            channel,
            serde_json::json!({ "retention_days": null }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["retention_days"], Value::Null);
}

/// `FILE_RETENTION_DAYS=30`; channel `short` keeps files 7 days, `long` has no limit of its
/// own. One run deletes the files past their limit (with `file_deleted`, reason
/// `retention`, and their quota given back), keeps the others, and the purge then removes
/// their objects.
async fn retention_deletes_files_past_the_shorter_limit_with_events_then_purges_them(
    store: StoreKind,
) {
    let app = spawn_app_on(
        store,
        &[
            ("FILE_RETENTION_DAYS", "30"),
            ("FILE_PURGE_AFTER_SECONDS", "0"),
        ],
    )
    .await;
    let alice = app.register("alice").await;
    let short = app.create_channel(&alice, "short", false).await;
    let long = app.create_channel(&alice, "long", false).await;
    let set = patch_channel(
        &app,
        &alice,
        short,
        serde_json::json!({ "retention_days": 7 }),
    )
    .await;
    expect_json(set, StatusCode::OK).await;
    let mut ids = Vec::new();
    for (channel, name, days) in [
        (short, "short-old", 10),
        (short, "short-new", 1),
        (long, "long-old", 10),
        (long, "long-ancient", 40),
    ] {
        let posted = expect_json(
            app.post_files(&alice, channel, name, &[pdf(&format!("{name}.pdf"), 1000)])
                .await,
            StatusCode::CREATED,
        )
        .await;
        let id = posted["files"][0]["id"].as_i64().unwrap();
        age(&app, id, days).await;
        ids.push((name, id, posted["id"].clone()));
    }
    let before = app.object_keys().await;
    assert_eq!(before.len(), 4);
    let mut events = app.events().await;

    let deleted = chatserver::gc::apply_retention(&app.state).await.unwrap();
    assert_eq!(deleted, 2);
    let expected: Vec<(i64, &Value)> = ids
        .iter()
        .filter(|(name, _, _)| ["short-old", "long-ancient"].contains(name))
        .map(|(_, id, message)| (*id, message))
        .collect();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
            .await
            .expect("a file_deleted event")
            .unwrap();
        let wire = app.render(&event, &alice);
        assert_eq!(wire["type"], "file_deleted");
        assert_eq!(wire["data"]["reason"], "retention");
        seen.push((
            wire["data"]["id"].as_i64().unwrap(),
            wire["data"]["message_id"].clone(),
        ));
    }
    seen.sort_by_key(|(id, _)| *id);
    let expected: Vec<(i64, Value)> = expected
        .into_iter()
        .map(|(id, m)| (id, m.clone()))
        .collect();
    assert_eq!(seen, expected);

    for (name, id, _) in &ids {
        let status = app
            .get(&format!("/api/files/{id}"), &alice.token)
            .await
            .status();
        let gone = ["short-old", "long-ancient"].contains(name);
        assert_eq!(
            status,
            if gone {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            "{name}"
        );
    }
    let (counter, recount) = used_bytes(&app, &alice).await;
    assert_eq!(counter, recount);
    assert_eq!(recount, 2 * fixtures::pdf(1000).len() as i64);
    // A second run finds nothing more.
    assert_eq!(
        chatserver::gc::apply_retention(&app.state).await.unwrap(),
        0
    );

    let report = chatserver::gc::sweep(&(&app.state).into()).await.unwrap();
    assert_eq!(report.purged, 2);
    assert_eq!(app.object_keys().await.len(), 2);
}
