//! A graceful shutdown of the real binary: on SIGTERM its WebSockets are closed with 1001,
//! an upload in flight still completes, and the process exits 0 within the grace period.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{
    JWT_SECRET, PASSWORD, PostgresDatabase, TestDatabase, expect_json, test_database,
};

const GRACE_SECONDS: u64 = 20;
/// Any single step of the test (a frame, an answer) comes well within this.
const STEP: Duration = Duration::from_secs(15);

/// The server binary, running, with its log lines and its exit status on channels.
struct Server {
    /// Until `terminate` hands it to the thread that waits for it.
    child: Option<Child>,
    address: String,
    logs: mpsc::Receiver<String>,
    exited: Option<mpsc::Receiver<ExitStatus>>,
}

impl Server {
    fn start(dir: &std::path::Path, database_url: &str) -> Server {
        let grace = GRACE_SECONDS.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatserver"))
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("DATA_DIR", dir.join("data"))
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("JWT_SECRET", JWT_SECRET)
            .env("WORKERS", "2")
            .env("SHUTDOWN_GRACE_SECONDS", &grace)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the chatserver binary");
        // Every log line goes to the channel (the pipe must never fill).
        let stderr = child.stderr.take().unwrap();
        let (lines, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let listening = logs
            .iter()
            .find(|line| line.contains(" listening"))
            .expect("the server logs where it listens");
        // With a target directory shared by several checkouts, the binary there may be
        // another checkout's build: say so rather than fail obscurely.
        assert!(
            listening.contains(&format!("shutdown_grace_seconds={GRACE_SECONDS}")),
            "{} is not this tree's build: {listening}",
            env!("CARGO_BIN_EXE_chatserver")
        );
        let address = listening
            .split_whitespace()
            .find_map(|field| field.strip_prefix("address="))
            .expect("an address in the listening line")
            .to_owned();
        Server {
            child: Some(child),
            address,
            logs,
            exited: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends SIGTERM (with `kill`, as an orchestrator would), and starts waiting for the exit.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
        let (sender, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait().unwrap());
        });
        self.exited = Some(exited);
    }

    /// The log lines so far.
    fn logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A multipart message with one text file, as raw bytes.
fn multipart_body(boundary: &str) -> Vec<u8> {
    let file = "line of text\n".repeat(2000);
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nsent during shutdown\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n{file}\r\n--{boundary}--\r\n"
    )
    .into_bytes()
}

/// Reads an HTTP head (up to the blank line) from `stream`.
async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(STEP, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "the connection ended: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_lets_uploads_finish_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (database_url, _postgres) = match test_database() {
        TestDatabase::Sqlite => (format!("sqlite://{}/chat.db", dir.path().display()), None),
        TestDatabase::Postgres(server) => {
            let db = PostgresDatabase::create(&server);
            (db.url.clone(), Some(db))
        }
    };
    let mut server = Server::start(dir.path(), &database_url);

    // No pooled connections: an idle keep-alive connection would hold the shutdown up.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let registered = client
        .post(server.url("/api/auth/register"))
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let token = expect_json(registered, StatusCode::CREATED).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = client
        .post(server.url("/api/channels"))
        .bearer_auth(&token)
        .json(&json!({ "name": "general" }))
        .send()
        .await
        .unwrap();
    let channel = expect_json(created, StatusCode::CREATED).await["id"]
        .as_i64()
        .unwrap();
    drop(client);

    // A WebSocket, ready.
    let mut request = format!("ws://{}/api/ws", server.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let ready = tokio::time::timeout(STEP, socket.next()).await.unwrap();
    let Some(Ok(Message::Text(ready))) = ready else {
        panic!("expected ready, got {ready:?}")
    };
    assert_eq!(
        serde_json::from_str::<Value>(&ready).unwrap()["type"],
        "ready"
    );

    // An upload whose head the server has taken (it answered `100 Continue`: a worker is
    // running its handler), and whose body has not been sent yet.
    let boundary = "shutdown-test-boundary";
    let body = multipart_body(boundary);
    let mut upload = tokio::net::TcpStream::connect(&server.address)
        .await
        .unwrap();
    let head = format!(
        "POST /api/channels/{channel}/messages HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        server.address,
        body.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    let continued = read_head(&mut upload).await;
    assert!(
        continued.starts_with("HTTP/1.1 100 Continue"),
        "{continued}"
    );

    server.terminate();

    // The socket is told to go elsewhere; the client library answers the close.
    let close = loop {
        let message = tokio::time::timeout(STEP, socket.next())
            .await
            .expect("a close frame in time");
        match message {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(_)) => continue,
            other => panic!(
                "expected a close frame, got {other:?}; logs:\n{}",
                server.logs().join("\n")
            ),
        }
    };
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, socket.next()).await {}
    // Hanging up ends the server's side of the connection at once.
    drop(socket);

    // The shutdown has begun (the socket's close says so); the upload still completes.
    upload.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, upload.read_to_end(&mut answer))
        .await
        .expect("the upload is answered in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("notes.txt"), "{answer}");

    let status = server
        .exited
        .take()
        .unwrap()
        .recv_timeout(Duration::from_secs(GRACE_SECONDS))
        .expect("the process exits within the grace period");
    let logs = server.logs();
    assert!(status.success(), "{status}; logs:\n{}", logs.join("\n"));
    assert!(
        logs.iter().any(|l| l.contains("shutting down")),
        "{}",
        logs.join("\n")
    );
}
