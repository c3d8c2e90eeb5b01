//! Direct upload benchmark: a file through the direct path (`POST /api/uploads`, presigned
//! part URLs, the parts `PUT` straight to S3, `complete`) against the same bytes sent by a
//! plain S3 client straight to the same S3 server with the same part size and parts in
//! flight; and the chat server's CPU per GiB on the direct path (signing, checking, hashing
//! the stored bytes) next to the multipart-through-the-server path (`POST /api/files/upload`).
//!
//! It prints, per size: the plain client's MB/s, the direct path's MB/s (until `complete`
//! answers) and their ratio (target >= 0.95), and the chat server's CPU seconds per GiB for
//! the direct path (until the background hash is recorded) and for the through-server path.
//!
//! Run it with `scripts/bench-direct.sh` (default: 1 GiB, one round), or by hand:
//!
//! ```sh
//! cargo build --release --bin chatserver
//! cargo run --release --example bench_direct -- --sizes-mib 1024
//! ```
//!
//! Like `bench_upload`: a fresh chat server process per upload, SeaweedFS (`weed mini`) on
//! loopback when `weed` is found (`$WEED` or `PATH`), else an in-process s3s-fs server.

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use aws_sdk_s3::Client;
use clap::Parser;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use common::s3::*;
use common::{
    Spawned, cpu_count, cpu_seconds, free_ports, load_average, median, server_bin_to_measure,
    work_dir,
};

/// The direct path's default part size (`DIRECT_UPLOAD_PART_SIZE_BYTES`).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once, as the browser client sends them.
const PARTS_IN_FLIGHT: usize = 4;
/// How much the HTTP client generates per body chunk on the way to the chat server.
const CLIENT_CHUNK: usize = 256 * 1024;
const MIB: u64 = 1024 * 1024;
/// The issue's target: the direct path against a plain S3 client.
const TARGET_RATIO: f64 = 0.95;

#[derive(Parser)]
#[command(about = "Direct uploads: throughput against a plain S3 client, chat server CPU per GiB")]
struct Args {
    /// File sizes in MiB, comma-separated (each at least the 8 MiB part size).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024u64])]
    sizes_mib: Vec<u64>,
    /// Measurements of each path per size; the table shows medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Which S3 server to run on loopback; `auto` prefers SeaweedFS.
    #[arg(long, value_enum, default_value_t = S3Choice::Auto)]
    s3: S3Choice,
    /// The chat server binary (default: `chatserver` in this example's profile directory).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Parent of the temporary directory holding the S3 data and the servers' files.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for &mib in &args.sizes_mib {
        ensure!(
            mib * MIB >= PART_SIZE as u64,
            "--sizes-mib: {mib} is under the 8 MiB part size"
        );
    }
    let server_bin = server_bin_to_measure(args.server_bin.as_deref())?;
    let work = work_dir(args.tmp_dir.as_deref())?;
    let s3 = S3Server::start(args.s3, work.path()).await?;
    println!("S3 server: {}, {}", s3.description, s3.endpoint);
    println!(
        "chat server: {}; part size {} MiB, {PARTS_IN_FLIGHT} in flight; {} CPUs; data in {}",
        server_bin.display(),
        PART_SIZE as u64 / MIB,
        cpu_count(),
        work.path().display()
    );
    let client = s3.client();
    create_bucket(&client).await?;
    warm_up(&s3, &client).await?;
    println!("load average before: {}", load_average());
    let mut rows = Vec::new();
    for &mib in &args.sizes_mib {
        let target = Target {
            server_bin: &server_bin,
            work: work.path(),
            s3: &s3,
            client: &client,
        };
        rows.push(measure_size(&target, mib * MIB, args.rounds).await?);
    }
    println!("load average after: {}", load_average());
    println!();
    print_table(&rows);
    println!(
        "\nreproduce: cargo build --release --bin chatserver && \
         cargo run --release --example bench_direct -- --sizes-mib {} --rounds {} --s3 {}",
        args.sizes_mib
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.rounds,
        s3.choice_name
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measurements

struct Target<'a> {
    server_bin: &'a Path,
    work: &'a Path,
    s3: &'a S3Server,
    client: &'a Client,
}

struct Row {
    size: u64,
    rounds: Vec<Round>,
}

struct Round {
    /// A plain S3 client, straight to S3.
    plain: Plain,
    /// The direct path through the chat server's API.
    direct: ViaChat,
    /// `POST /api/files/upload`: every byte through the chat server.
    through: ViaChat,
}

struct Plain {
    seconds: f64,
}

struct ViaChat {
    /// Until the upload's answer (`complete`, or the upload request).
    seconds: f64,
    /// The chat server's CPU seconds, until the file's hash is recorded.
    chat_cpu: f64,
    sha256: String,
}

async fn measure_size(target: &Target<'_>, size: u64, rounds: u32) -> anyhow::Result<Row> {
    let expected_sha256 = sha256_of_random_bytes(size).await?;
    let mut row = Row {
        size,
        rounds: Vec::new(),
    };
    for round in 0..rounds {
        eprintln!("{}: round {} of {rounds} ...", human_size(size), round + 1);
        let dir = |path: &str| {
            target
                .work
                .join(format!("chatserver-{path}-{}-{round}", size / MIB))
        };
        let plain = measure_plain(target.client, size).await?;
        target.s3.empty_bucket(target.client).await?;
        let direct = measure_via_chat(target, &dir("direct"), size, true).await?;
        target.s3.empty_bucket(target.client).await?;
        let through = measure_via_chat(target, &dir("through"), size, false).await?;
        target.s3.empty_bucket(target.client).await?;
        for (path, measured) in [("direct", &direct), ("through-server", &through)] {
            ensure!(
                measured.sha256 == expected_sha256,
                "the {path} path stored other bytes: sha256 {} instead of {expected_sha256}",
                measured.sha256
            );
        }
        let round = Round {
            plain,
            direct,
            through,
        };
        print_round(size, &round);
        row.rounds.push(round);
    }
    Ok(row)
}

async fn measure_plain(client: &Client, size: u64) -> anyhow::Result<Plain> {
    let key = format!("plain-{size}.mp4");
    settle();
    let start = Instant::now();
    upload_plain(client, &key, size, PARTS_IN_FLIGHT).await?;
    let seconds = start.elapsed().as_secs_f64();
    let stored = client.head_object().bucket(BUCKET).key(&key).send().await?;
    ensure!(
        stored.content_length() == Some(size as i64),
        "the plain object has {:?} bytes, not {size}",
        stored.content_length()
    );
    Ok(Plain { seconds })
}

/// One upload by a fresh chat server process: the direct path or the through-server one.
async fn measure_via_chat(
    target: &Target<'_>,
    dir: &Path,
    size: u64,
    direct: bool,
) -> anyhow::Result<ViaChat> {
    let server = ChatServer::start(target.server_bin, dir, target.s3).await?;
    let http = http_client()?;
    let session = Session::open(&http, &server.base_url).await?;
    settle();
    let pid = server.process.pid();
    let cpu_before = cpu_seconds(&pid.to_string())?;
    let start = Instant::now();
    let (seconds, sha256) = if direct {
        let (ready, answered) = session.upload_direct(&http, size).await?;
        let seconds = answered.duration_since(start).as_secs_f64();
        let id = ready["id"].as_str().context("no upload id")?;
        (seconds, session.wait_for_hash(&http, id).await?)
    } else {
        let file = session.upload_through(&http, size).await?;
        let seconds = start.elapsed().as_secs_f64();
        (
            seconds,
            file["sha256"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let chat_cpu = cpu_seconds(&pid.to_string())? - cpu_before;
    let _ = std::fs::remove_dir_all(dir);
    Ok(ViaChat {
        seconds,
        chat_cpu,
        sha256,
    })
}

/// Lets the previous measurement's writes reach the disk.
fn settle() {
    let _ = Command::new("sync").status();
}

/// One small untimed upload, so that the first measurement does not pay for the S3 server's
/// first volume allocations and connections.
async fn warm_up(s3: &S3Server, client: &Client) -> anyhow::Result<()> {
    upload_plain(client, "warm-up", 4 * PART_SIZE as u64, PARTS_IN_FLIGHT).await?;
    s3.empty_bucket(client).await
}

// ---------------------------------------------------------------------------------------
// The direct path

// ---------------------------------------------------------------------------------------
// The path through the chat server

/// A registered user with a message to attach files to.
struct Session {
    base_url: String,
    token: String,
    channel_id: i64,
    message_id: i64,
}

impl Session {
    async fn open(http: &reqwest::Client, base_url: &str) -> anyhow::Result<Session> {
        let registered = post_json(
            http,
            &format!("{base_url}/api/auth/register"),
            None,
            json!({"username": "bench", "password": "bench-password-0123"}),
        )
        .await?;
        let token = registered["token"]
            .as_str()
            .context("no token from register")?
            .to_owned();
        let channel = post_json(
            http,
            &format!("{base_url}/api/channels"),
            Some(&token),
            json!({"name": "bench"}),
        )
        .await?;
        let channel_id = channel["id"].as_i64().context("no channel id")?;
        let message = post_json(
            http,
            &format!("{base_url}/api/channels/{channel_id}/messages"),
            Some(&token),
            json!({"content": "a large attachment"}),
        )
        .await?;
        Ok(Session {
            base_url: base_url.to_owned(),
            token,
            channel_id,
            message_id: message["id"].as_i64().context("no message id")?,
        })
    }

    /// Streams `size` random bytes as the `file` part (no length: the body is chunked) and
    /// returns the stored file as the server describes it.
    async fn upload_through(&self, http: &reqwest::Client, size: u64) -> anyhow::Result<Value> {
        let chunks = futures_util::stream::unfold(RandomBytes::new(size), |mut data| async move {
            let chunk = data.next_chunk(CLIENT_CHUNK);
            (!chunk.is_empty()).then(|| (Ok::<_, std::io::Error>(chunk), data))
        });
        let file = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks))
            .file_name("bench.mp4")
            .mime_str("video/mp4")?;
        let form = reqwest::multipart::Form::new()
            .text("message_id", self.message_id.to_string())
            .part("file", file);
        let response = http
            .post(format!("{}/api/files/upload", self.base_url))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await?;
        let answer = expect_status(response, reqwest::StatusCode::CREATED).await?;
        Ok(answer["files"][0].clone())
    }

    /// The direct path as a browser takes it: `POST /api/uploads`, part URLs (100 per call),
    /// `PARTS_IN_FLIGHT` presigned `PUT`s at once straight to S3, `complete`. Returns the
    /// ready upload and when `complete` answered.
    async fn upload_direct(
        &self,
        http: &reqwest::Client,
        size: u64,
    ) -> anyhow::Result<(Value, Instant)> {
        let upload = post_json(
            http,
            &format!("{}/api/uploads", self.base_url),
            Some(&self.token),
            json!({"channel_id": self.channel_id, "file_name": "bench.mp4", "file_size": size, "content_type": "video/mp4"}),
        )
        .await?;
        let id = upload["id"].as_str().context("no upload id")?.to_owned();
        let part_size = upload["part_size"].as_u64().context("no part size")? as usize;
        ensure!(
            part_size == PART_SIZE,
            "the server chose {part_size}-byte parts"
        );
        let part_count = upload["part_count"].as_i64().context("no part count")? as i32;
        let mut data = RandomBytes::new(size);
        let mut in_flight: VecDeque<JoinHandle<anyhow::Result<Value>>> = VecDeque::new();
        let mut sent = Vec::new();
        let numbers: Vec<i32> = (1..=part_count).collect();
        for batch in numbers.chunks(100) {
            let response = http
                .post(format!("{}/api/uploads/{id}/parts", self.base_url))
                .bearer_auth(&self.token)
                .json(&json!({ "part_numbers": batch }))
                .send()
                .await?;
            let urls = expect_status(response, reqwest::StatusCode::OK).await?;
            for part in urls["parts"].as_array().context("no parts")? {
                let number = part["part_number"].clone();
                let url = part["url"].as_str().context("no url")?.to_owned();
                let bytes = data.next_chunk(PART_SIZE);
                if in_flight.len() == PARTS_IN_FLIGHT {
                    sent.push(in_flight.pop_front().expect("parts in flight").await??);
                }
                let http = http.clone();
                in_flight.push_back(tokio::spawn(async move {
                    let response = http.put(url).body(bytes).send().await?;
                    let status = response.status();
                    ensure!(
                        status.is_success(),
                        "part PUT: {status}: {}",
                        response.text().await?
                    );
                    let etag = response
                        .headers()
                        .get("etag")
                        .context("no ETag")?
                        .to_str()?
                        .to_owned();
                    Ok(json!({"part_number": number, "etag": etag}))
                }));
            }
        }
        for part in in_flight {
            sent.push(part.await??);
        }
        let response = http
            .post(format!("{}/api/uploads/{id}/complete", self.base_url))
            .bearer_auth(&self.token)
            .json(&json!({ "parts": sent }))
            .send()
            .await?;
        let ready = expect_status(response, reqwest::StatusCode::OK).await?;
        Ok((ready, Instant::now()))
    }

    /// Waits until the server has hashed the upload's stored bytes (in the background for
    /// large files); its `sha256`.
    async fn wait_for_hash(&self, http: &reqwest::Client, id: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let response = http
                .get(format!("{}/api/uploads/{id}", self.base_url))
                .bearer_auth(&self.token)
                .send()
                .await?;
            let upload = expect_status(response, reqwest::StatusCode::OK).await?;
            if let Some(hash) = upload["file"]["sha256"].as_str() {
                return Ok(hash.to_owned());
            }
            ensure!(Instant::now() < deadline, "no hash within 600 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    // A proxy from the environment must not sit between us and loopback.
    // Idle connections dropped below actix's 5 s keep-alive: the API connection idles while
    // the parts go to S3, and must not be reused just as the server closes it.
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(3))
        .build()?)
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    expect_status(request.send().await?, reqwest::StatusCode::CREATED).await
}

async fn expect_status(
    response: reqwest::Response,
    expected: reqwest::StatusCode,
) -> anyhow::Result<Value> {
    let (status, url) = (response.status(), response.url().clone());
    let text = response.text().await?;
    ensure!(
        status == expected,
        "{url}: {status} instead of {expected}: {text}"
    );
    Ok(serde_json::from_str(&text)?)
}

/// A chat server process with its own database and data directory.
struct ChatServer {
    process: Spawned,
    base_url: String,
}

impl ChatServer {
    async fn start(bin: &Path, dir: &Path, s3: &S3Server) -> anyhow::Result<ChatServer> {
        std::fs::create_dir_all(dir)?;
        let addr = format!("127.0.0.1:{}", free_ports(1)?[0]);
        let mut command = Command::new(bin);
        // A clean environment (and a working directory without a `.env`): nothing from the
        // caller's shell, such as REDIS_URL or ALLOWED_FILE_TYPES, changes what is measured.
        command
            .env_clear()
            .current_dir(dir)
            .env("HOME", dir)
            .env("BIND_ADDR", &addr)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.join("chat.db").display()),
            )
            .env("DATA_DIR", dir)
            .env("JWT_SECRET", "bench-jwt-secret-bench-jwt-secret-0123")
            .env("AWS_S3_BUCKET_NAME", BUCKET)
            .env("AWS_S3_ENDPOINT", &s3.endpoint)
            .env("AWS_S3_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("MAX_FILE_SIZE_MB", "5000")
            .env("GC_INTERVAL_SECONDS", "0")
            .env("RUST_LOG", "warn");
        let mut process =
            Spawned::start("chatserver", command, &dir.join("chatserver.log"), false)?;
        let base_url = format!("http://{addr}");
        let http = http_client()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            process.check_running()?;
            let ready = http.get(format!("{base_url}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(ChatServer { process, base_url });
            }
            ensure!(
                Instant::now() < deadline,
                "the chat server was not ready within 60 s; see {}",
                process.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// CPU use

// ---------------------------------------------------------------------------------------
// Output

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

fn human_size(bytes: u64) -> String {
    if bytes.is_multiple_of(1024 * MIB) {
        format!("{} GiB", bytes / (1024 * MIB))
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * MIB as f64)
}

impl Round {
    /// The direct path's MB/s over the plain client's.
    fn ratio(&self) -> f64 {
        self.plain.seconds / self.direct.seconds
    }
}

fn print_round(size: u64, round: &Round) {
    println!(
        "{}: plain S3 client {:.1} MB/s ({:.1} s) | direct path {:.1} MB/s ({:.1} s; chat CPU {:.2} s) \
         | ratio {:.3} | through the server {:.1} MB/s ({:.1} s; chat CPU {:.2} s)",
        human_size(size),
        mb_per_s(size, round.plain.seconds),
        round.plain.seconds,
        mb_per_s(size, round.direct.seconds),
        round.direct.seconds,
        round.direct.chat_cpu,
        round.ratio(),
        mb_per_s(size, round.through.seconds),
        round.through.seconds,
        round.through.chat_cpu,
    );
}

fn print_table(rows: &[Row]) {
    println!(
        "MB = 10^6 bytes; medians over rounds; ratio = direct path / plain S3 client (target >= \
         {TARGET_RATIO}); chat CPU = the chat server's CPU seconds per GiB (direct: until the \
         background hash is recorded)"
    );
    println!(
        "{:>8} | {:>6} | {:>10} | {:>11} | {:>6} | {:>16} | {:>12} | {:>17}",
        "size",
        "rounds",
        "plain MB/s",
        "direct MB/s",
        "ratio",
        "direct CPU s/GiB",
        "through MB/s",
        "through CPU s/GiB"
    );
    for row in rows {
        let size = row.size;
        let m = |f: &dyn Fn(&Round) -> f64| median(row.rounds.iter().map(f));
        let ratio = m(&Round::ratio);
        println!(
            "{:>8} | {:>6} | {:>10.1} | {:>11.1} | {:>6.3} | {:>16.2} | {:>12.1} | {:>17.2}   ratio target: {}",
            human_size(size),
            row.rounds.len(),
            m(&|r| mb_per_s(size, r.plain.seconds)),
            m(&|r| mb_per_s(size, r.direct.seconds)),
            ratio,
            m(&|r| r.direct.chat_cpu / gib(size)),
            m(&|r| mb_per_s(size, r.through.seconds)),
            m(&|r| r.through.chat_cpu / gib(size)),
            if ratio >= TARGET_RATIO {
                "met"
            } else {
                "MISSED"
            },
        );
    }
}
