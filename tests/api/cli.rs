//! The binary itself: `migrate`, and configuration refused with a one-line reason.

use std::process::{Command, Output};

use crate::helpers::{PostgresDatabase, TestDatabase, test_database};

pub(crate) fn chatserver(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatserver"));
    command
        .current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("running the chatserver binary")
}

#[test]
fn migrate_applies_migrations_and_generates_a_kept_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _postgres) = match test_database() {
        TestDatabase::Sqlite => ("sqlite://data/chat.db".to_string(), None),
        TestDatabase::Postgres(server) => {
            let db = PostgresDatabase::create(&server);
            (db.url.clone(), Some(db))
        }
    };
    let output = chatserver(dir.path(), &["migrate"], &[("DATABASE_URL", &url)]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = stdout
        .lines()
        .find(|l| l.contains("migration(s) applied"))
        .expect("a report line");
    let applied: usize = report.split_whitespace().next().unwrap().parse().unwrap();
    assert!(applied >= 1, "{stdout}");
    let secret = dir.path().join("data/jwt_secret");
    let key = std::fs::read(&secret).expect("a generated key in the data directory");
    assert!(key.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private to its owner");
    }
    let again = chatserver(dir.path(), &["migrate"], &[("DATABASE_URL", &url)]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 migration(s) applied"));
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        key,
        "the key is kept, not regenerated"
    );
}

#[test]
fn invalid_configuration_is_refused_with_a_one_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (vec![("JWT_SECRET", "too-short")], "JWT_SECRET"),
        (
            vec![("DATABASE_URL", "mysql://localhost/chat")],
            "DATABASE_URL",
        ),
        (
            vec![("DATABASE_URL", "postgress://localhost/chat")],
            "DATABASE_URL",
        ),
        (vec![("MAX_FILE_SIZE_MB", "lots")], "MAX_FILE_SIZE_MB"),
    ];
    for (env, variable) in cases {
        let output = chatserver(dir.path(), &["migrate"], &env);
        assert!(!output.status.success(), "{env:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains(variable), "{stderr}");
    }
    // A typo in the scheme never silently creates an SQLite file.
    assert!(!dir.path().join("data/chat.db").exists());
}

#[test]
fn gc_sweeps_without_starting_the_hub_redis_or_a_listener() {
    let dir = tempfile::tempdir().unwrap();
    // Something already listens on the configured address, and Redis is set but dead:
    // neither matters to a sweep, which touches only the database and the store.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let env = [
        ("DATABASE_URL", "sqlite://data/chat.db"),
        ("BIND_ADDR", bind.as_str()),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("RUST_LOG", "debug"),
    ];
    let output = chatserver(dir.path(), &["gc"], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["purged"], 0, "{report}");
    assert!(report["missing_objects"].is_array(), "{report}");
    assert!(
        !stderr.to_lowercase().contains("redis"),
        "Redis was started: {stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "a listener was started: {stderr}"
    );
}

/// Found by attack: admins were named by username, so whoever registered `admin` first was
/// one. `ADMIN_USERNAMES` now grants only accounts that exist at start; the CLI records
/// grants.
#[tokio::test]
async fn administration_is_granted_not_claimed_by_registering_a_name() {
    use crate::helpers::{expect_error, spawn_app_with};
    use reqwest::StatusCode;
    let app = spawn_app_with(&[("ADMIN_USERNAMES", "root")]).await;
    let root = app.register("root").await;
    let status = app.get("/api/admin/realtime-status", &root.token).await;
    expect_error(status, StatusCode::FORBIDDEN, "forbidden").await;

    let dir = tempfile::tempdir().unwrap();
    let url = app.database_url().to_owned();
    let grant = chatserver(
        dir.path(),
        &["admin", "grant", "root"],
        &[("DATABASE_URL", &url)],
    );
    assert!(
        grant.status.success(),
        "{}",
        String::from_utf8_lossy(&grant.stderr)
    );
    let status = app.get("/api/admin/realtime-status", &root.token).await;
    assert_eq!(status.status(), StatusCode::OK);

    let revoke = chatserver(
        dir.path(),
        &["admin", "revoke", "root"],
        &[("DATABASE_URL", &url)],
    );
    assert!(revoke.status.success());
    let status = app.get("/api/admin/realtime-status", &root.token).await;
    assert_eq!(status.status(), StatusCode::FORBIDDEN);

    let nobody = chatserver(
        dir.path(),
        &["admin", "grant", "nobody"],
        &[("DATABASE_URL", &url)],
    );
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no user named"));

    // An account that exists when an instance starts is granted by ADMIN_USERNAMES.
    let peer = app.spawn_peer(&[]).await;
    let status = peer.get("/api/admin/realtime-status", &root.token).await;
    assert_eq!(status.status(), StatusCode::OK);
}
