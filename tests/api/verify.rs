//! `verify` (src/verify.rs) against both stores, and `chatserver verify` (local store), on
//! the database under test; `GET /api/admin/storage-report`.
//!
//! The S3 variants live in `verify::s3` (CI runs them again against SeaweedFS with that
//! filter).

use std::collections::BTreeMap;

use chatserver::db::models::FileUpload;
use chatserver::db::schema::file_uploads;
use chatserver::storage::Presentation;
use chatserver::verify::{VerifyOptions, VerifyReport, verify};
use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixtures::{self, Upload};
use crate::helpers::{
    JWT_SECRET, StoreKind, TestApp, TestUser, expect_error, expect_json, spawn_app_on,
};

/// Runs each scenario once per store.
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
    verify_finds_missing_truncated_orphaned_and_changed_objects,
    deleted_files_and_recent_objects_are_not_errors,
    verify_pages_through_more_than_a_page,
    the_storage_report_sums_the_live_rows_for_admins_only,
);

/// Every row, deleted or not, in id order.
async fn rows(app: &TestApp) -> Vec<FileUpload> {
    app.state
        .db
        .run(|conn| {
            Ok(file_uploads::table
                .order(file_uploads::id)
                .select(FileUpload::as_select())
                .load(conn)?)
        })
        .await
        .unwrap()
}

/// Posts one message with these files; their JSON.
async fn upload(app: &TestApp, user: &TestUser, channel: i64, files: &[Upload]) -> Vec<Value> {
    let message = expect_json(
        app.post_files(user, channel, "files", files).await,
        StatusCode::CREATED,
    )
    .await;
    message["files"].as_array().unwrap().clone()
}

/// Writes an object straight into the store (replacing one that is there).
async fn put(app: &TestApp, key: &str, bytes: Vec<u8>) {
    let mut body = futures_util::stream::iter([Ok(bytes::Bytes::from(bytes))]);
    app.state
        .store
        .put_stream(key, &Presentation::of("x.bin", "image/png"), &mut body)
        .await
        .unwrap();
}

async fn run(app: &TestApp, options: VerifyOptions) -> VerifyReport {
    verify(&app.state.db, &app.state.store, &options)
        .await
        .unwrap()
}

fn options(app: &TestApp, rehash: bool) -> VerifyOptions {
    VerifyOptions::from_settings(&app.state.settings, rehash)
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> i32) -> Vec<i32> {
    let mut ids: Vec<i32> = items.iter().map(id).collect();
    ids.sort();
    ids
}

async fn verify_finds_missing_truncated_orphaned_and_changed_objects(store: StoreKind) {
    let app = spawn_app_on(store, &[("ORPHAN_MIN_AGE_SECONDS", "0")]).await;
    let (alice, _, channel) = app.two_members().await;
    let files: Vec<Upload> = (0..5)
        .map(|i| Upload::new(&format!("f{i}.png"), "image/png", fixtures::png(3000 + i)))
        .collect();
    upload(&app, &alice, channel, &files).await;
    let rows = rows(&app).await;
    assert_eq!(rows.len(), 5);

    // Everything agrees.
    for rehash in [false, true] {
        let report = run(&app, options(&app, rehash)).await;
        assert!(report.ok, "{report:?}");
        assert_eq!(report.errors.total(), 0);
        assert_eq!((report.checked.rows, report.checked.objects), (5, 5));
        let bytes: i64 = rows.iter().map(|r| r.file_size.unwrap()).sum();
        assert_eq!(report.checked.bytes, bytes as u64);
        assert_eq!(report.checked.rehashed, if rehash { 5 } else { 0 });
    }

    let (missing, truncated, changed) = (&rows[0], &rows[1], &rows[2]);
    app.state.store.delete(&missing.s3_key).await.unwrap();
    let size = truncated.file_size.unwrap() as usize;
    put(&app, &truncated.s3_key, vec![0; size - 10]).await;
    // The same bytes as uploaded but one bit.
    let uploaded = files.iter().find(|f| f.name == changed.file_name).unwrap();
    let mut flipped = uploaded.bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    put(&app, &changed.s3_key, flipped).await;
    // An orphan under this deployment's prefix; another deployment's object, which is none
    // of this one's business.
    let orphan = format!(
        "{}channels/{channel}/2020/01/01/00000000-0000-0000-0000-000000000000.png",
        app.state.store.owned_prefix()
    );
    put(&app, &orphan, b"orphan".to_vec()).await;
    put(
        &app,
        "another-deployment/channels/1/x.png",
        b"theirs".to_vec(),
    )
    .await;

    let report = run(&app, options(&app, false)).await;
    assert!(!report.ok, "{report:?}");
    let e = &report.errors;
    assert_eq!(ids(&e.missing_objects.items, |f| f.id), vec![missing.id]);
    assert_eq!(e.missing_objects.items[0].key, missing.s3_key);
    assert_eq!(e.size_mismatches.count, 1, "{report:?}");
    let mismatch = &e.size_mismatches.items[0];
    assert_eq!(mismatch.id, truncated.id);
    assert_eq!(mismatch.expected, truncated.file_size.unwrap());
    assert_eq!(mismatch.actual, truncated.file_size.unwrap() as u64 - 10);
    assert_eq!(e.orphans.count, 1, "{report:?}");
    assert_eq!(e.orphans.items[0].key, orphan);
    assert_eq!(e.orphans.items[0].size, 6);
    assert_eq!(
        e.hash_mismatches.count, 0,
        "same size: only a rehash sees it"
    );
    assert_eq!(report.checked.rehashed, 0);

    let report = run(&app, options(&app, true)).await;
    let e = &report.errors;
    assert_eq!(e.hash_mismatches.count, 1, "{report:?}");
    let mismatch = &e.hash_mismatches.items[0];
    assert_eq!(mismatch.id, changed.id);
    assert_eq!(mismatch.expected, changed.sha256.clone().unwrap());
    assert_ne!(mismatch.actual, mismatch.expected);
    assert_eq!(
        (
            e.missing_objects.count,
            e.size_mismatches.count,
            e.orphans.count
        ),
        (1, 1, 1)
    );
    // The truncated object is not read (its size says enough), the missing one cannot be.
    assert_eq!(report.checked.rehashed, 3);

    // The listing is capped, the count is not.
    let capped = run(
        &app,
        VerifyOptions {
            max_listed: 0,
            ..options(&app, true)
        },
    )
    .await;
    assert_eq!(capped.errors.total(), 4);
    assert!(capped.errors.missing_objects.items.is_empty());

    // The report serialises as documented.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["errors"]["missing_objects"]["count"], 1);
    assert_eq!(
        json["errors"]["missing_objects"]["items"][0]["id"],
        missing.id
    );
    assert_eq!(
        json["errors"]["orphans"]["items"][0]["key"],
        orphan.as_str()
    );
}

async fn deleted_files_and_recent_objects_are_not_errors(store: StoreKind) {
    // Default grace periods: an hour to purge, a day before an unrecorded object is an
    // orphan.
    let app = spawn_app_on(store, &[]).await;
    let (alice, _, channel) = app.two_members().await;
    let files = upload(
        &app,
        &alice,
        channel,
        &[
            Upload::new("a.png", "image/png", fixtures::png(100)),
            Upload::new("b.png", "image/png", fixtures::png(200)),
            Upload::new("c.png", "image/png", fixtures::png(300)),
        ],
    )
    .await;
    for file in &files[..2] {
        let deleted = app
            .delete(&format!("/api/files/{}", file["id"]), &alice.token)
            .await;
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    }
    let rows = rows(&app).await;
    // One deleted file's object is purged already; the other's is kept for the grace period.
    app.state.store.delete(&rows[0].s3_key).await.unwrap();
    // An object with no row yet: an upload between storing and committing, say.
    let young = format!(
        "{}channels/{channel}/young.png",
        app.state.store.owned_prefix()
    );
    put(&app, &young, b"young".to_vec()).await;

    let report = run(&app, options(&app, true)).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.info.purged, 1);
    assert_eq!(report.info.awaiting_purge, 1);
    assert_eq!(report.info.pending_purge.count, 0);
    assert_eq!(report.info.recent_unrecorded.count, 1);
    assert_eq!(report.info.recent_unrecorded.items[0].key, young);
    assert_eq!(report.checked.rehashed, 1, "only the live file is read");

    // Past the grace period, the deleted file's object is pending purge: still not an error.
    let report = run(
        &app,
        VerifyOptions {
            purge_after: chrono::TimeDelta::zero(),
            ..options(&app, false)
        },
    )
    .await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.info.awaiting_purge, 0);
    assert_eq!(
        ids(&report.info.pending_purge.items, |f| f.id),
        vec![rows[1].id]
    );
}

async fn verify_pages_through_more_than_a_page(store: StoreKind) {
    // Pages of 3 over 10 files, 2 of them missing, an orphan among them: the merge crosses
    // page boundaries on both sides.
    let app = spawn_app_on(store, &[("ORPHAN_MIN_AGE_SECONDS", "0")]).await;
    let (alice, _, channel) = app.two_members().await;
    let files: Vec<Upload> = (0..10)
        .map(|i| Upload::new(&format!("f{i}.png"), "image/png", fixtures::png(50 + i)))
        .collect();
    upload(&app, &alice, channel, &files).await;
    let mut rows = rows(&app).await;
    rows.sort_by(|a, b| a.s3_key.cmp(&b.s3_key));
    for row in [&rows[3], &rows[7]] {
        app.state.store.delete(&row.s3_key).await.unwrap();
    }
    // Sorts between the 5th and 6th keys.
    let orphan = format!("{}~", rows[4].s3_key);
    put(&app, &orphan, b"o".to_vec()).await;
    let report = run(
        &app,
        VerifyOptions {
            page_size: 3,
            ..options(&app, true)
        },
    )
    .await;
    assert_eq!((report.checked.rows, report.checked.objects), (10, 9));
    assert_eq!(
        ids(&report.errors.missing_objects.items, |f| f.id),
        ids(&[&rows[3], &rows[7]], |r| r.id)
    );
    assert_eq!(report.errors.orphans.items[0].key, orphan);
    assert_eq!(report.errors.total(), 3, "{report:?}");
    assert_eq!(report.checked.rehashed, 8);
}

async fn the_storage_report_sums_the_live_rows_for_admins_only(store: StoreKind) {
    let app = spawn_app_on(store, &[]).await;
    let (alice, bob, general) = app.two_members().await;
    let random = app.create_channel(&bob, "random", false).await;
    app.grant_admin("alice").await;

    // Empty at first.
    let empty = expect_json(
        app.get("/api/admin/storage-report", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        empty,
        json!({"total_bytes": 0, "file_count": 0, "by_user": [], "by_channel": [], "by_type": []})
    );

    upload(
        &app,
        &alice,
        general,
        &[
            Upload::new("a.png", "image/png", fixtures::png(5000)),
            Upload::new("b.pdf", "application/pdf", fixtures::pdf(700)),
        ],
    )
    .await;
    let bobs = upload(
        &app,
        &bob,
        random,
        &[
            Upload::new("c.png", "image/png", fixtures::png(300)),
            Upload::new("d.pdf", "application/pdf", fixtures::pdf(9000)),
            Upload::new("e.png", "image/png", fixtures::png(10_000)),
        ],
    )
    .await;
    // Deleted files do not count.
    let deleted = app
        .delete(&format!("/api/files/{}", bobs[2]["id"]), &bob.token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let report = expect_json(
        app.get("/api/admin/storage-report", &alice.token).await,
        StatusCode::OK,
    )
    .await;
    let live: Vec<FileUpload> = rows(&app)
        .await
        .into_iter()
        .filter(|r| !r.is_deleted)
        .collect();
    assert_eq!(live.len(), 4);
    let total: i64 = live.iter().map(|r| r.file_size.unwrap()).sum();
    assert_eq!(report["total_bytes"], total);
    assert_eq!(report["file_count"], 4);

    // (bytes, files) by uploader, channel and type, summed here from the rows.
    let sums = |key: &dyn Fn(&FileUpload) -> String| {
        let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for row in &live {
            let entry = sums.entry(key(row)).or_default();
            entry.0 += row.file_size.unwrap();
            entry.1 += 1;
        }
        sums
    };
    let from_report = |list: &str, key: &str| -> BTreeMap<String, (i64, i64)> {
        let entries = report[list].as_array().unwrap();
        // Largest first.
        let bytes: Vec<i64> = entries
            .iter()
            .map(|e| e["bytes"].as_i64().unwrap())
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{list}: {bytes:?}");
        entries
            .iter()
            .map(|e| {
                (
                    e[key].to_string().trim_matches('"').to_owned(),
                    (e["bytes"].as_i64().unwrap(), e["files"].as_i64().unwrap()),
                )
            })
            .collect()
    };
    assert_eq!(
        from_report("by_user", "id"),
        sums(&|r| r.uploaded_by.unwrap().to_string())
    );
    assert_eq!(
        from_report("by_channel", "id"),
        sums(&|r| r.channel_id.to_string())
    );
    assert_eq!(
        from_report("by_type", "content_type"),
        sums(&|r| r.content_type.clone().unwrap())
    );
    // Names beside the ids.
    let first_user = &report["by_user"][0];
    assert_eq!(first_user["id"], bob.id);
    assert_eq!(first_user["username"], "bobby");
    let channels: Vec<(i64, &str)> = report["by_channel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_i64().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    assert_eq!(channels, vec![(random, "random"), (general, "general")]);

    expect_error(
        app.get("/api/admin/storage-report", &bob.token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let anonymous = app
        .client
        .get(app.url("/api/admin/storage-report"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// The table is paged in the byte order of the keys, as S3 lists them, even in a PostgreSQL
/// database whose collation orders them otherwise (ICU `en-US`: `p/B` after `p/a0`).
#[tokio::test]
async fn rows_are_paged_in_byte_order_whatever_the_collation() {
    use chatserver::config::DatabaseTarget;
    use chatserver::db::Db;
    use diesel::connection::SimpleConnection;

    let dir = tempfile::tempdir().unwrap();
    let (target, _postgres) = match crate::helpers::test_database() {
        crate::helpers::TestDatabase::Sqlite => {
            (DatabaseTarget::Sqlite(dir.path().join("keys.db")), None)
        }
        crate::helpers::TestDatabase::Postgres(server) => {
            let db = crate::helpers::PostgresDatabase::create_with(
                &server,
                "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
            );
            (DatabaseTarget::Postgres(db.url.clone()), Some(db))
        }
    };
    let db = Db::connect(&target).unwrap();
    db.migrate().unwrap();
    let keys = [
        "p/b/10/y", "p/a/x", "p/B", "p/é", "p/a0", "p/b/1/z", "p/a.txt",
    ];
    let mut sql = String::from(
        "INSERT INTO users (id, username, display_name, password_hash, created_at) \
         VALUES (1, 'u', 'u', 'x', CURRENT_TIMESTAMP); \
         INSERT INTO channels (id, name, is_private, created_by, created_at) \
         VALUES (1, 'c', FALSE, 1, CURRENT_TIMESTAMP); \
         INSERT INTO messages (id, channel_id, user_id, content, created_at) \
         VALUES (1, 1, 1, 'm', CURRENT_TIMESTAMP);",
    );
    for key in keys {
        sql.push_str(&format!(
            "INSERT INTO file_uploads (message_id, channel_id, file_name, s3_key, uploaded_at) \
             VALUES (1, 1, 'f', '{key}', CURRENT_TIMESTAMP);"
        ));
    }
    let paged = db
        .run(move |conn| {
            conn.batch_execute(&sql)?;
            let mut paged = Vec::new();
            let mut after = String::new();
            loop {
                let page = chatserver::db::files::rows_after(conn, &after, 2)?;
                let Some(last) = page.last() else { break };
                after = last.s3_key.clone();
                paged.extend(page.into_iter().map(|r| r.s3_key));
            }
            Ok(paged)
        })
        .await
        .unwrap();
    let mut bytewise: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    bytewise.sort();
    assert_eq!(paged, bytewise);
}

/// `chatserver verify` (the local store): exit 0 and `"ok": true` when all agree, exit 2 and
/// the findings when not; `--rehash` reads the objects.
#[tokio::test]
async fn the_cli_exits_non_zero_when_something_is_wrong() {
    let app = spawn_app_on(StoreKind::Local, &[]).await;
    let (alice, _, channel) = app.two_members().await;
    upload(
        &app,
        &alice,
        channel,
        &[
            Upload::new("a.png", "image/png", fixtures::png(400)),
            Upload::new("b.png", "image/png", fixtures::png(500)),
        ],
    )
    .await;
    let rows = rows(&app).await;
    let data_dir = app.data_dir().display().to_string();
    let env = [
        ("DATABASE_URL", app.database_url()),
        ("DATA_DIR", data_dir.as_str()),
        ("JWT_SECRET", JWT_SECRET),
    ];
    let cli = |args: &[&str]| {
        let output = crate::cli::chatserver(app.data_dir(), args, &env);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // With a target directory shared by several checkouts, the binary there may be
        // another checkout's build: say so rather than fail obscurely.
        assert!(
            !stderr.contains("unrecognized subcommand"),
            "{} is not this tree's build (run `cargo build` first): {stderr}",
            env!("CARGO_BIN_EXE_chatserver")
        );
        let report: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}\n{stderr}"));
        (output.status.code(), report)
    };

    let (code, report) = cli(&["verify", "--rehash"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["store"], "local");
    assert_eq!(report["checked"]["rows"], 2);
    assert_eq!(report["checked"]["rehashed"], 2);

    app.state.store.delete(&rows[0].s3_key).await.unwrap();
    let path = app.state.store.local_path(&rows[1].s3_key).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let (code, report) = cli(&["verify"]);
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["errors"]["missing_objects"]["items"][0]["id"],
        rows[0].id
    );
    assert_eq!(report["errors"]["hash_mismatches"]["count"], 0);
    let (code, report) = cli(&["verify", "--rehash"]);
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(
        report["errors"]["hash_mismatches"]["items"][0]["id"],
        rows[1].id
    );
}
