//! Redis for the cross-instance tests: `TEST_REDIS_URL`'s when set, else a `redis-server`
//! of the test's own on a free port. Without either the test is skipped with a line on
//! stderr that says so (not swallowed by the test harness); with `TEST_FORBID_SKIPS=1`, as
//! `.ci/run` sets, a skip fails instead.

use std::process::{Child, Command, Stdio};

use tokio::net::TcpStream;

use crate::helpers::{eventually, skip};

fn has_redis_server() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Redis to use (not to stop: see [`PrivateRedis`] for that).
pub struct TestRedis {
    pub url: String,
    _own: Option<PrivateRedis>,
}

impl TestRedis {
    pub async fn start(test: &str) -> Option<TestRedis> {
        if let Ok(url) = std::env::var("TEST_REDIS_URL") {
            return Some(TestRedis { url, _own: None });
        }
        let own = PrivateRedis::start(test).await?;
        Some(TestRedis {
            url: format!("redis://127.0.0.1:{}", own.port),
            _own: Some(own),
        })
    }
}

/// A Redis server of the test's own, to stop and start again.
pub struct PrivateRedis {
    pub port: u16,
    process: Child,
}

impl PrivateRedis {
    /// On a free port; `None` (after saying so) when no `redis-server` is installed.
    pub async fn start(test: &str) -> Option<PrivateRedis> {
        if !has_redis_server() {
            skip(
                test,
                "no redis-server on PATH (Debian: apt install redis-server)",
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redis = PrivateRedis::start_on(port);
        redis.wait_ready().await;
        Some(redis)
    }

    pub fn start_on(port: u16) -> PrivateRedis {
        let process = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server was found a moment ago");
        PrivateRedis { port, process }
    }

    pub async fn wait_ready(&self) {
        let listening = async || TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
        assert!(eventually(listening).await, "redis-server did not start");
    }

    pub fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
