//! Database writes through `Db::write`: each is all or nothing, also when SQLite's writer
//! commits several together.

use std::sync::mpsc;
use std::time::Duration;

use chatserver::db::{self, Db};
use chatserver::error::AppError;

use crate::helpers::{eventually, spawn_app, spawn_app_with};

async fn add_user(db: &Db, name: &'static str, then_fail: bool) -> Result<i32, AppError> {
    db.write(move |conn| {
        let user = db::users::insert(conn, name, name, "not-a-hash")?;
        if then_fail {
            return Err(AppError::NotFound);
        }
        Ok(user.id)
    })
    .await
}

async fn user_exists(db: &Db, name: &'static str) -> bool {
    db.run(move |conn| Ok(db::users::find_by_username(conn, name)?))
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_failing_write_rolls_back_alone_when_writes_commit_together() {
    let app = spawn_app().await;
    let db = app.state.db.clone();
    add_user(&db, "existing", false).await.unwrap();

    // Hold the first write inside the database until the others are queued behind it, so
    // that (on SQLite) they go to the writer as one batch.
    let (started, has_started) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let first = tokio::spawn({
        let db = db.clone();
        async move {
            db.write(move |conn| {
                started.send(()).unwrap();
                released.recv().unwrap();
                Ok(db::users::insert(conn, "held", "held", "not-a-hash")?.id)
            })
            .await
        }
    });
    tokio::task::spawn_blocking(move || has_started.recv().unwrap())
        .await
        .unwrap();
    let queued = tokio::spawn({
        let db = db.clone();
        async move {
            tokio::join!(
                add_user(&db, "before", false),
                add_user(&db, "failing", true),
                add_user(&db, "after", false),
                // A unique violation inside the batch: also fails alone.
                add_user(&db, "existing", false),
            )
        }
    });
    // The precondition, not a pause: on SQLite all four wait behind the held write, so the
    // writer takes them as one batch once it is released. (On PostgreSQL each write is a
    // transaction of its own that waits for nothing: they all finish first.)
    let all_queued = async || match db.queued_writes() {
        Some(queued) => queued == 4,
        None => queued.is_finished(),
    };
    assert!(
        eventually(all_queued).await,
        "the writes never queued behind the held one"
    );
    release.send(()).unwrap();

    assert!(first.await.unwrap().is_ok());
    let (before, failing, after, duplicate) = queued.await.unwrap();
    assert!(before.is_ok(), "{before:?}");
    assert!(matches!(failing, Err(AppError::NotFound)), "{failing:?}");
    assert!(after.is_ok(), "{after:?}");
    assert!(
        matches!(duplicate, Err(AppError::Conflict { .. })),
        "{duplicate:?}"
    );
    for name in ["held", "before", "after", "existing"] {
        assert!(user_exists(&db, name).await, "{name} was committed");
    }
    assert!(
        !user_exists(&db, "failing").await,
        "the failed write left its row behind"
    );
}

/// The writer never checkpoints (a commit would wait for the checkpoint's fsyncs); the
/// checkpointer thread must, or the log would grow for as long as the server runs.
#[tokio::test]
async fn the_write_ahead_log_is_checkpointed_in_the_background() {
    // SQLite whatever TEST_DATABASE_URL says: the write-ahead log is SQLite's. (It used to
    // return early, passing, on PostgreSQL runs.)
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("wal.db").display());
    let app = spawn_app_with(&[("DATABASE_URL", url.as_str())]).await;
    let file = dir.path().join("wal.db");
    let (owner, _, channel_id) = app.two_members().await;
    let size = || std::fs::metadata(&file).unwrap().len();
    let before = size();
    // ~1 MiB of messages: far below SQLite's own checkpoint threshold (1,000 pages).
    let content = "x".repeat(4000);
    for _ in 0..250 {
        app.post_message(&owner, channel_id, &content).await;
    }
    let mut waited = Duration::ZERO;
    while size() < before + 1_000_000 {
        assert!(
            waited < Duration::from_secs(30),
            "the database file stayed at {} bytes: the log was never checkpointed",
            size()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
}

/// Another process (an operator's shell, a backup) holding SQLite's write lock makes
/// writes wait at most `DATABASE_BUSY_TIMEOUT_MS`, then `503 database_unavailable` with
/// `Retry-After`, also for writes queued behind others; nothing is written meanwhile.
#[tokio::test]
async fn a_locked_sqlite_database_answers_503_within_the_busy_timeout() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    use futures_util::future::join_all;
    use reqwest::StatusCode;
    use serde_json::json;

    // SQLite whatever TEST_DATABASE_URL says: the lock is SQLite's.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("locked.db");
    let url = format!("sqlite://{}", file.display());
    let app = crate::helpers::spawn_app_with(&[
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_BUSY_TIMEOUT_MS", "300"),
    ])
    .await;
    let (alice, _, channel) = app.two_members().await;
    let path = format!("/api/channels/{channel}/messages");

    let mut other_process = diesel::SqliteConnection::establish(&file.to_string_lossy()).unwrap();
    other_process.batch_execute("BEGIN IMMEDIATE").unwrap();

    // Far above the 300 ms allowed, far below what queued batches waiting one after another
    // would take (20 x 300 ms), or the old fixed 10 s.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let posts = (0..20).map(|i| {
        client
            .post(app.url(&path))
            .bearer_auth(&alice.token)
            .json(&json!({ "content": format!("while locked {i}") }))
            .send()
    });
    for answer in join_all(posts).await {
        let answer = answer.expect("answered within the busy timeout, not hung");
        assert!(answer.headers().contains_key("retry-after"));
        crate::helpers::expect_error(
            answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
        )
        .await;
    }

    other_process.batch_execute("ROLLBACK").unwrap();
    app.post_message(&alice, channel, "after the lock").await;
    let listing =
        crate::helpers::expect_json(app.get(&path, &alice.token).await, StatusCode::OK).await;
    let contents: Vec<&str> = listing["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["after the lock"]);
}
