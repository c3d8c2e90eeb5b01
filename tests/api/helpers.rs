//! The test harness: each test gets the real server on a real socket (port 0) over a fresh
//! database: a temporary SQLite file, or a new PostgreSQL database when
//! `TEST_DATABASE_URL=postgres://...` is set.

use std::collections::HashMap;

use chatserver::config::Settings;
use chatserver::realtime::{ChannelEvent, Viewer};
use chatserver::startup::Application;
use chatserver::state::AppState;
use diesel::{Connection, PgConnection, RunQueryDsl};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::fixtures::Upload;
use crate::s3::TestS3;
use reqwest::multipart::{Form, Part};

pub const PASSWORD: &str = "correct horse battery";
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:PORT` of the metrics listener, when `METRICS_BIND_ADDR` is set.
    pub metrics_address: Option<String>,
    /// Does not follow redirects, so tests see them.
    pub client: reqwest::Client,
    pub state: AppState,
    pub s3: Option<TestS3>,
    database_url: String,
    settings: Vec<(String, String)>,
    _data_dir: tempfile::TempDir,
    postgres: Option<PostgresDatabase>,
}

/// Which file store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    /// The in-process S3 server, or `TEST_S3_ENDPOINT`'s when set.
    S3,
    /// Always the in-process S3 server, whatever `TEST_S3_ENDPOINT` says: for tests that
    /// stop and restart the store.
    S3InProcess,
}

pub struct TestUser {
    pub id: i64,
    pub token: String,
}

/// The database the tests run against, from the environment.
pub enum TestDatabase {
    Sqlite,
    Postgres(String),
}

/// SQLite without `TEST_DATABASE_URL`; PostgreSQL with a `postgres://` (or `postgresql://`)
/// one. Anything else set there is a mistake, not a reason to test SQLite instead while
/// the run claims to be a PostgreSQL one.
pub fn test_database() -> TestDatabase {
    match std::env::var("TEST_DATABASE_URL") {
        Err(std::env::VarError::NotPresent) => TestDatabase::Sqlite,
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            TestDatabase::Postgres(url)
        }
        Ok(url) => {
            panic!("TEST_DATABASE_URL={url:?} is not a postgres:// URL (unset it for SQLite)")
        }
        Err(e) => panic!("TEST_DATABASE_URL: {e}"),
    }
}

/// Says that `test` did not run and why; fails it when skips are forbidden
/// (`TEST_FORBID_SKIPS=1`, as `.ci/run` sets), so a skip never passes as a pass there.
pub fn skip(test: &str, why: &str) {
    if std::env::var("TEST_FORBID_SKIPS").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run: {why} (TEST_FORBID_SKIPS=1)");
    }
    // Straight to the process's stderr: libtest captures only the print macros.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// How long a test waits for an event it expects before failing (never a hang).
pub const EVENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The next event the hub delivers, within [`EVENT_DEADLINE`]; panics, saying what was
/// awaited, when none comes.
pub async fn recv_within(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<ChannelEvent>>,
    what: &str,
) -> ChannelEvent {
    match tokio::time::timeout(EVENT_DEADLINE, events.recv()).await {
        Ok(Ok(event)) => (*event).clone(),
        Ok(Err(e)) => panic!("waiting for {what}: the event tap failed: {e}"),
        Err(_) => panic!("waiting for {what}: no event within {EVENT_DEADLINE:?}"),
    }
}

/// A throwaway PostgreSQL database, dropped with the test.
pub struct PostgresDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PostgresDatabase {
    pub fn create(server_url: &str) -> PostgresDatabase {
        PostgresDatabase::create_with(server_url, "")
    }

    /// `create`, with `options` after `CREATE DATABASE "name"` (a locale, say).
    pub fn create_with(server_url: &str, options: &str) -> PostgresDatabase {
        let name = format!("chat_test_{}", uuid::Uuid::new_v4().simple());
        let base = server_base(server_url);
        let admin_url = format!("{base}/postgres");
        let mut admin = PgConnection::establish(&admin_url).expect("connecting to PostgreSQL");
        diesel::sql_query(format!(r#"CREATE DATABASE "{name}" {options}"#))
            .execute(&mut admin)
            .expect("creating a test database");
        PostgresDatabase {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

/// `postgres://user@host:port/db?x` -> `postgres://user@host:port`.
fn server_base(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// Settings for a test server, with extra variables layered on top.
pub fn test_settings(
    data_dir: &std::path::Path,
    database_url: &str,
    extra: &[(&str, &str)],
) -> Settings {
    let mut vars: HashMap<String, String> = [
        ("BIND_ADDR", "127.0.0.1:0"),
        ("JWT_SECRET", JWT_SECRET),
        ("WORKERS", "2"),
        // Every test user registers from 127.0.0.1; tests of the limit set their own.
        ("REGISTRATIONS_PER_MINUTE_PER_ADDRESS", "10000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.insert("DATABASE_URL".into(), database_url.into());
    vars.insert("DATA_DIR".into(), data_dir.display().to_string());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Settings::from_lookup(|k| vars.get(k).cloned()).expect("valid test settings")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_on(StoreKind::Local, extra).await
}

pub async fn spawn_app_on(store: StoreKind, extra: &[(&str, &str)]) -> TestApp {
    init_logging();
    let s3 = match store {
        StoreKind::Local => None,
        StoreKind::S3 => Some(TestS3::start().await),
        StoreKind::S3InProcess => Some(TestS3::start_in_process().await),
    };
    let s3_settings = s3.as_ref().map(TestS3::settings).unwrap_or_default();
    let mut extra: Vec<(&str, &str)> = extra.to_vec();
    extra.extend(s3_settings.iter().map(|(k, v)| (*k, v.as_str())));
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let (database_url, postgres) = match test_database() {
        TestDatabase::Sqlite => (
            format!("sqlite://{}/chat.db", data_dir.path().display()),
            None,
        ),
        TestDatabase::Postgres(server) => {
            let db = PostgresDatabase::create(&server);
            (db.url.clone(), Some(db))
        }
    };
    let settings = test_settings(data_dir.path(), &database_url, &extra);
    let owned_extra = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let app = Application::build(settings)
        .await
        .expect("building the app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = metrics_address(&app);
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        metrics_address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Below the server's 5 s keep-alive: a connection idle that long is not reused
            // at the moment the server closes it (`IncompleteMessage` on a loaded machine).
            .pool_idle_timeout(std::time::Duration::from_secs(3))
            .build()
            .unwrap(),
        state,
        s3,
        database_url,
        settings: owned_extra,
        _data_dir: data_dir,
        postgres,
    }
}

fn metrics_address(app: &Application) -> Option<String> {
    app.metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"))
}

fn init_logging() {
    // Quiet by default; TEST_LOG=1 shows the server's logs.
    if std::env::var("TEST_LOG").is_ok() {
        chatserver::telemetry::init();
    }
}

impl TestApp {
    /// Another instance of the same deployment: same database, data directory and
    /// settings, plus `extra`.
    pub async fn spawn_peer(&self, extra: &[(&str, &str)]) -> TestApp {
        let mut vars: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        vars.extend_from_slice(extra);
        let settings = test_settings(self._data_dir.path(), &self.database_url, &vars);
        let app = Application::build(settings).await.expect("building a peer");
        let address = format!("http://127.0.0.1:{}", app.port());
        let metrics_address = metrics_address(&app);
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            metrics_address,
            client: self.client.clone(),
            state,
            s3: None,
            database_url: self.database_url.clone(),
            settings: self.settings.clone(),
            _data_dir: tempfile::tempdir().unwrap(),
            postgres: None,
        }
    }

    /// This instance's metrics as the metrics listener would serve them (in process: no
    /// listener needed).
    pub fn metrics(&self) -> String {
        self.state.metrics.render(self.state.db.pool_state())
    }

    /// The database this app uses (for the CLI).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Makes `username` an administrator, as `chatserver admin grant` does.
    pub async fn grant_admin(&self, username: &str) {
        let name = username.to_owned();
        let granted = self
            .state
            .db
            .write(move |conn| Ok(chatserver::db::users::set_admin(conn, &name, true)?))
            .await
            .unwrap();
        assert!(granted, "no user {username}");
    }

    /// The data directory (the local store lives in its `files/`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn backend(&self) -> &'static str {
        if self.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// A copy of the events the hub delivers from now on (everything published before is
    /// already behind it).
    pub async fn events(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<ChannelEvent>> {
        let mut events = self.state.events.subscribe();
        self.state.events.hub().sync().await;
        while events.try_recv().is_ok() {}
        events
    }

    /// Asserts that the hub delivers nothing more in `channel` from what came before: posts
    /// a marker message there as `user` and expects it to be the very next event. Events
    /// of a channel are delivered in commit order and the marker commits after everything
    /// the caller already got an answer for, so anything still queued would come first.
    /// (Checking `try_recv` right after a reply would race the hub instead.)
    pub async fn assert_no_more_events(
        &self,
        events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<ChannelEvent>>,
        user: &TestUser,
        channel_id: i64,
    ) {
        let marker = format!("marker {}", uuid::Uuid::new_v4().simple());
        self.post_message(user, channel_id, &marker).await;
        let next = self.render(&recv_within(events, "the marker message").await, user);
        assert_eq!(
            (next["type"].as_str(), next["data"]["content"].as_str()),
            (Some("message_created"), Some(marker.as_str())),
            "an event came before the marker: {next}"
        );
    }

    /// Posts a message with files as `multipart/form-data`: `content`, then `file` parts.
    pub async fn post_files(
        &self,
        user: &TestUser,
        channel_id: i64,
        content: &str,
        files: &[Upload],
    ) -> Response {
        let form = with_files(Form::new().text("content", content.to_owned()), files);
        self.client
            .post(self.url(&format!("/api/channels/{channel_id}/messages")))
            .bearer_auth(&user.token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/files/upload`: `message_id`, then the files; to send (headers may be
    /// added first).
    pub fn attach_files(
        &self,
        user: &TestUser,
        message_id: &str,
        files: &[Upload],
    ) -> reqwest::RequestBuilder {
        let form = with_files(Form::new().text("message_id", message_id.to_owned()), files);
        self.client
            .post(self.url("/api/files/upload"))
            .bearer_auth(&user.token)
            .multipart(form)
    }

    /// An event as `viewer` would receive it.
    pub fn render(&self, event: &ChannelEvent, viewer: &TestUser) -> Value {
        event.render(&Viewer {
            user_id: viewer.id as i32,
            base_url: &self.address,
            links: &self.state.links,
        })
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, username: &str) -> TestUser {
        let response = self
            .client
            .post(self.url("/api/auth/register"))
            .json(&json!({ "username": username, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        let body = expect_json(response, StatusCode::CREATED).await;
        TestUser {
            id: body["user"]["id"].as_i64().unwrap(),
            token: body["token"].as_str().unwrap().into(),
        }
    }

    pub async fn create_channel(&self, owner: &TestUser, name: &str, is_private: bool) -> i64 {
        let response = self
            .post(
                "/api/channels",
                &owner.token,
                json!({ "name": name, "is_private": is_private }),
            )
            .await;
        expect_json(response, StatusCode::CREATED).await["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn join(&self, user: &TestUser, channel_id: i64) {
        let response = self
            .post(
                &format!("/api/channels/{channel_id}/join"),
                &user.token,
                json!({}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// alice and bobby, both members of the public channel "general" (alice created it).
    pub async fn two_members(&self) -> (TestUser, TestUser, i64) {
        let alice = self.register("alice").await;
        let bob = self.register("bobby").await;
        let channel = self.create_channel(&alice, "general", false).await;
        self.join(&bob, channel).await;
        (alice, bob, channel)
    }

    pub async fn post_message(&self, user: &TestUser, channel_id: i64, content: &str) -> Value {
        let response = self
            .post(
                &format!("/api/channels/{channel_id}/messages"),
                &user.token,
                json!({ "content": content }),
            )
            .await;
        expect_json(response, StatusCode::CREATED).await
    }
}

/// Checks `ready` every 50 ms for up to 5 s; whether it became true. For what the server
/// finishes in the background (the caller asserts, with its own message).
/// `form` with one `file` part per upload, as a browser sends them.
fn with_files(form: Form, files: &[Upload]) -> Form {
    files.iter().fold(form, |form, f| {
        let part = Part::bytes(f.bytes.clone())
            .file_name(f.name.clone())
            .mime_str(&f.declared_type)
            .unwrap();
        form.part("file", part)
    })
}

pub async fn eventually(mut ready: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if ready().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// The value of one series (`name{labels}` exactly as rendered) in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Asserts the status and the API's error body with this code.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_json(response, status).await;
    assert_eq!(body["error"]["code"], code, "unexpected error body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// Runs each named scenario (an `async fn(StoreKind)` of the calling module) once per
/// store, as tests `local::name` and `s3::name` (CI runs `*::s3::*` again on SeaweedFS).
macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test] async fn $name() { super::$name($crate::helpers::StoreKind::Local).await })*
        }
        mod s3 {
            $(#[tokio::test] async fn $name() { super::$name($crate::helpers::StoreKind::S3).await })*
        }
    };
}
pub(crate) use for_each_store;

impl TestApp {
    /// Every object key in the store (all deployments' prefixes), sorted.
    pub async fn object_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
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
}
