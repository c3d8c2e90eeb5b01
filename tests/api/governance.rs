//! Storage governance: per-user quotas (`USER_QUOTA_MB`) and retention, on both stores.

use chatserver::db::schema::{file_uploads, quota_reservations, users};
use diesel::prelude::*;
use futures_util::future::join_all;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::fixtures::{self, Upload};
use crate::helpers::{
    StoreKind, TestApp, TestUser, eventually, expect_error, expect_json, spawn_app_on,
};

macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test] async fn $name() { super::$name(super::StoreKind::Local).await })*
        }
        mod s3 {
            $(#[tokio::test] async fn $name() { super::$name(super::StoreKind::S3).await })*
        }
    };
}

for_each_store!(
    an_upload_over_the_quota_is_refused_before_anything_is_stored,
    a_streamed_upload_is_stopped_at_the_quota,
    racing_uploads_and_deletes_never_exceed_the_quota_and_the_count_stays_exact,
);

const KIB: usize = 1024;

async fn objects(app: &TestApp) -> Vec<String> {
    let mut keys: Vec<String> = app
        .state
        .store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    keys
}

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
    let form = Form::new().text("message_id", message_id.to_string()).part(
        "file",
        Part::bytes(file.bytes)
            .file_name(file.name)
            .mime_str(&file.declared_type)
            .unwrap(),
    );
    app.client
        .post(app.url("/api/files/upload"))
        .bearer_auth(&user.token)
        .multipart(form)
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
    let stored = objects(&app).await;

    // 600 KiB more would make 1200 KiB: refused on the declared length, on both routes.
    let refused = app
        .post_files(&alice, channel, "second", &[pdf("b.pdf", 600 * KIB)])
        .await;
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    let message = app.post_message(&alice, channel, "files follow").await;
    let refused = attach(&app, &alice, &message["id"], pdf("c.pdf", 600 * KIB)).await;
    expect_error(refused, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    assert_eq!(objects(&app).await, stored, "nothing was stored");
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
    assert!(eventually(async || objects(&app).await.is_empty()).await);
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
