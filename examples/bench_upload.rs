//! Upload benchmark: a random file through `POST /api/files/upload` into S3, against the same
//! bytes sent straight to the same S3 server the way users compare it: a plain S3 client
//! with its default transfer settings (boto3's and aws-cli's `TransferConfig`: 8 MiB parts,
//! 10 in flight; `--reference-parts-in-flight` changes the 10). The reference is the Rust
//! SDK with unsigned payloads and no checksums, which is at least as fast as boto3 itself
//! (boto3 over plain HTTP also signs every payload and adds a CRC32).
//!
//! For each size it prints the MB/s of both paths, their ratio (server / direct) and the chat
//! server's peak RSS growth during the upload. The issue's targets: a ratio of at least 0.9,
//! and a peak RSS growth of at most 48 MiB that does not grow with the file size. Each size is
//! measured `--rounds` times (default 3, alternating which path goes first) and the table
//! shows medians: on a small shared machine one pair of uploads says little.
//!
//! Run it with `scripts/bench-upload.sh` (a quick run: `--sizes-mib 64,256 --rounds 1`), or
//! by hand:
//!
//! ```sh
//! cargo build --release --bin chatserver
//! cargo run --release --example bench_upload -- --sizes-mib 1024,4096
//! ```
//!
//! The chat server runs as a separate process (`chatserver` next to this example's directory,
//! i.e. `target/release/chatserver`), a fresh one per upload, so its RSS is its own. The S3 server
//! runs on loopback: SeaweedFS (`weed mini`) when `weed` is found (`$WEED` or `PATH`), else an
//! in-process s3s-fs server. Everything lives in one temporary directory, removed at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use aws_sdk_s3::Client;
use clap::Parser;
use serde_json::{Value, json};

use common::s3::*;
use common::{
    Spawned, cpu_count, cpu_seconds, free_ports, load_average, median, mib, proc_status_bytes,
    server_bin_to_measure, work_dir,
};

/// The part size of the direct reference: boto3's and aws-cli's default `multipart_chunksize`
/// (also the server's `PART_SIZE` in src/storage/s3.rs).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// How much the HTTP client generates per body chunk on the way to the chat server.
const CLIENT_CHUNK: usize = 256 * 1024;
const MIB: u64 = 1024 * 1024;
/// The issue's targets.
const TARGET_RATIO: f64 = 0.9;
const TARGET_RSS_MIB: f64 = 48.0;
/// "The same for both sizes": a growth that scaled with the file would differ by far more
/// than one part between 1 and 4 GiB.
const RSS_SAME_TOLERANCE_MIB: f64 = 8.0;

#[derive(Parser)]
#[command(about = "Upload throughput and memory: through the chat server vs straight to S3")]
struct Args {
    /// File sizes in MiB, comma-separated (each at least the 8 MiB part size).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024u64, 4096])]
    sizes_mib: Vec<u64>,
    /// Measurements of each path per size; the table shows medians. This machine's noise
    /// (other builds on few cores) makes a single pair of uploads an unreliable ratio.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Parts the direct reference sends at once: boto3's and aws-cli's default
    /// `max_concurrency` is 10.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    reference_parts_in_flight: u32,
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

    // Declared first so it is removed last, after the processes using it have stopped.
    let work = work_dir(args.tmp_dir.as_deref())?;
    let s3 = S3Server::start(args.s3, work.path()).await?;
    println!("S3 server: {}, {}", s3.description, s3.endpoint);
    println!(
        "chat server: {}; direct reference: {} MiB parts, {} in flight; {} CPUs; data in {}",
        server_bin.display(),
        PART_SIZE as u64 / MIB,
        args.reference_parts_in_flight,
        cpu_count(),
        work.path().display()
    );
    let client = s3.client();
    create_bucket(&client).await?;
    let in_flight = args.reference_parts_in_flight as usize;
    warm_up(&s3, &client, in_flight).await?;

    println!("load average before: {}", load_average());
    let mut rows = Vec::new();
    for &mib in &args.sizes_mib {
        let target = Target {
            server_bin: &server_bin,
            work: work.path(),
            s3: &s3,
            client: &client,
            in_flight,
        };
        rows.push(measure_size(&target, mib * MIB, args.rounds).await?);
    }
    println!("load average after: {}", load_average());

    println!();
    print_table(&rows);
    print_targets(&rows);
    println!(
        "\nreproduce: cargo build --release --bin chatserver && \
         cargo run --release --example bench_upload -- --sizes-mib {} --rounds {} --s3 {} \
         --reference-parts-in-flight {}",
        args.sizes_mib
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.rounds,
        s3.choice_name,
        args.reference_parts_in_flight
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measurements

/// What one size is measured against.
struct Target<'a> {
    server_bin: &'a Path,
    work: &'a Path,
    s3: &'a S3Server,
    client: &'a Client,
    /// Parts the direct reference sends at once.
    in_flight: usize,
}

struct Row {
    size: u64,
    rounds: Vec<Round>,
}

/// One upload of each path, one after the other.
struct Round {
    direct: Direct,
    through: ThroughServer,
}

/// All rounds for one size. Rounds alternate which path goes first, so that neither always
/// inherits the other's after-effects (writeback, the S3 server's background work).
async fn measure_size(target: &Target<'_>, size: u64, rounds: u32) -> anyhow::Result<Row> {
    let expected_sha256 = sha256_of_random_bytes(size).await?;
    let mut row = Row {
        size,
        rounds: Vec::new(),
    };
    for round in 0..rounds {
        eprintln!("{}: round {} of {rounds} ...", human_size(size), round + 1);
        let server_dir = target
            .work
            .join(format!("chatserver-{}-{round}", size / MIB));
        let through_server =
            measure_through_server(target.server_bin, &server_dir, target.s3, size);
        let (direct, through) = if round % 2 == 0 {
            let direct = measure_direct(target.client, target.s3, size, target.in_flight).await?;
            (direct, through_server.await?)
        } else {
            let through = through_server.await?;
            (
                measure_direct(target.client, target.s3, size, target.in_flight).await?,
                through,
            )
        };
        ensure!(
            through.sha256 == expected_sha256,
            "the server stored other bytes: sha256 {} instead of {expected_sha256}",
            through.sha256
        );
        target.s3.empty_bucket(target.client).await?;
        let _ = std::fs::remove_dir_all(&server_dir);
        let round = Round { direct, through };
        print_round(size, &round);
        row.rounds.push(round);
    }
    Ok(row)
}

struct Direct {
    seconds: f64,
    cpu: CpuUse,
}

struct ThroughServer {
    seconds: f64,
    cpu: CpuUse,
    rss_before: u64,
    rss_peak: u64,
    sha256: String,
}

/// Straight to S3: a multipart upload of the random bytes, as a plain S3 client sends it.
async fn measure_direct(
    client: &Client,
    s3: &S3Server,
    size: u64,
    in_flight: usize,
) -> anyhow::Result<Direct> {
    let key = format!("direct-{size}.mp4");
    settle();
    let cpu_before = CpuSnapshot::take(s3.pid, None)?;
    let start = Instant::now();
    upload_plain(client, &key, size, in_flight).await?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = CpuSnapshot::take(s3.pid, None)?.since(&cpu_before);
    let stored = client.head_object().bucket(BUCKET).key(&key).send().await?;
    ensure!(
        stored.content_length() == Some(size as i64),
        "the direct object has {:?} bytes, not {size}",
        stored.content_length()
    );
    Ok(Direct { seconds, cpu })
}

/// Through `POST /api/files/upload` of a fresh chat server process, whose peak RSS is reset
/// just before the upload.
async fn measure_through_server(
    server_bin: &Path,
    dir: &Path,
    s3: &S3Server,
    size: u64,
) -> anyhow::Result<ThroughServer> {
    let server = ChatServer::start(server_bin, dir, s3).await?;
    let http = http_client()?;
    let session = Session::open(&http, &server.base_url).await?;
    settle();
    let pid = server.process.pid();
    let rss_before = proc_status_bytes(pid, "VmRSS")?;
    // VmHWM is a lifetime peak, and start-up (migrations, an Argon2 hash of 19 MiB) has
    // already set it: bring it down to the current RSS so it measures the upload alone.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .context("resetting the server's peak RSS (/proc/PID/clear_refs)")?;
    let cpu_before = CpuSnapshot::take(s3.pid, Some(pid))?;
    let start = Instant::now();
    let file = session.upload(&http, size).await?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = CpuSnapshot::take(s3.pid, Some(pid))?.since(&cpu_before);
    let rss_peak = proc_status_bytes(pid, "VmHWM")?;
    ensure!(
        file["file_size"].as_u64() == Some(size),
        "the server stored {} bytes, not {size}",
        file["file_size"]
    );
    Ok(ThroughServer {
        seconds,
        cpu,
        rss_before,
        rss_peak,
        sha256: file["sha256"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Lets the previous measurement's writes reach the disk, so that writeback does not land on
/// the next measurement.
fn settle() {
    let _ = Command::new("sync").status();
}

/// One small untimed upload, so that the first measurement does not pay for the S3 server's
/// first volume allocations and connections.
async fn warm_up(s3: &S3Server, client: &Client, in_flight: usize) -> anyhow::Result<()> {
    upload_plain(client, "warm-up", 4 * PART_SIZE as u64, in_flight).await?;
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
            message_id: message["id"].as_i64().context("no message id")?,
        })
    }

    /// Streams `size` random bytes as the `file` part (no length: the body is chunked) and
    /// returns the stored file as the server describes it.
    async fn upload(&self, http: &reqwest::Client, size: u64) -> anyhow::Result<Value> {
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
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    // A proxy from the environment must not sit between us and loopback.
    Ok(reqwest::Client::builder().no_proxy().build()?)
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

/// CPU seconds of this process (the client, plus s3s-fs when it runs here), the external S3
/// server and the chat server.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    bench: f64,
    s3: Option<f64>,
    chat: Option<f64>,
}

struct CpuSnapshot(CpuUse);

impl CpuSnapshot {
    fn take(s3: Option<u32>, chat: Option<u32>) -> anyhow::Result<CpuSnapshot> {
        let of = |pid: Option<u32>| pid.map(|p| cpu_seconds(&p.to_string())).transpose();
        Ok(CpuSnapshot(CpuUse {
            bench: cpu_seconds("self")?,
            s3: of(s3)?,
            chat: of(chat)?,
        }))
    }

    fn since(&self, before: &CpuSnapshot) -> CpuUse {
        let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        CpuUse {
            bench: self.0.bench - before.0.bench,
            s3: diff(self.0.s3, before.0.s3),
            chat: diff(self.0.chat, before.0.chat),
        }
    }
}

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

impl Round {
    fn direct_mb_per_s(&self, size: u64) -> f64 {
        mb_per_s(size, self.direct.seconds)
    }

    fn server_mb_per_s(&self, size: u64) -> f64 {
        mb_per_s(size, self.through.seconds)
    }

    /// Server MB/s over direct MB/s.
    fn ratio(&self) -> f64 {
        self.direct.seconds / self.through.seconds
    }

    fn rss_growth_mib(&self) -> f64 {
        mib(self
            .through
            .rss_peak
            .saturating_sub(self.through.rss_before))
    }
}

impl Row {
    fn median_of(&self, figure: impl Fn(&Round) -> f64) -> f64 {
        median(self.rounds.iter().map(figure))
    }

    /// The largest growth of any round: the target is a bound.
    fn rss_growth_mib(&self) -> f64 {
        self.rounds
            .iter()
            .map(Round::rss_growth_mib)
            .fold(0.0, f64::max)
    }
}

/// One line per round as it ends, with the CPU seconds each process spent during each upload
/// (`bench` is this process: the client, plus s3s-fs when it runs here).
fn print_round(size: u64, round: &Round) {
    let cpu = |c: CpuUse| {
        let mut text = format!("bench {:.1}", c.bench);
        if let Some(s3) = c.s3 {
            text += &format!(", S3 {s3:.1}");
        }
        if let Some(chat) = c.chat {
            text += &format!(", chat {chat:.1}");
        }
        text
    };
    println!(
        "{}: direct {:.1} MB/s ({:.1} s; CPU s: {}) | server {:.1} MB/s ({:.1} s; CPU s: {}) | \
         ratio {:.3} | server RSS {:.1} -> peak {:.1} MiB (+{:.1})",
        human_size(size),
        round.direct_mb_per_s(size),
        round.direct.seconds,
        cpu(round.direct.cpu),
        round.server_mb_per_s(size),
        round.through.seconds,
        cpu(round.through.cpu),
        round.ratio(),
        mib(round.through.rss_before),
        mib(round.through.rss_peak),
        round.rss_growth_mib(),
    );
}

fn print_table(rows: &[Row]) {
    println!(
        "MB = 10^6 bytes; medians over rounds; ratio = median of the rounds' server/direct \
         ratios; RSS growth = the largest of the rounds (VmHWM - VmRSS at the upload's start)"
    );
    println!(
        "{:>8} | {:>6} | {:>11} | {:>11} | {:>6} | {:>21}",
        "size", "rounds", "direct MB/s", "server MB/s", "ratio", "server RSS growth MiB"
    );
    for row in rows {
        let size = row.size;
        println!(
            "{:>8} | {:>6} | {:>11.1} | {:>11.1} | {:>6.3} | {:>21.1}",
            human_size(size),
            row.rounds.len(),
            row.median_of(|r| r.direct_mb_per_s(size)),
            row.median_of(|r| r.server_mb_per_s(size)),
            row.median_of(Round::ratio),
            row.rss_growth_mib(),
        );
    }
}

fn print_targets(rows: &[Row]) {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let lowest_ratio = rows
        .iter()
        .map(|r| r.median_of(Round::ratio))
        .fold(f64::INFINITY, f64::min);
    let growths: Vec<f64> = rows.iter().map(Row::rss_growth_mib).collect();
    let most = growths.iter().copied().fold(0.0, f64::max);
    let least = growths.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "\ntargets: ratio >= {TARGET_RATIO}: {} (lowest {lowest_ratio:.3}); \
         peak RSS growth <= {TARGET_RSS_MIB} MiB: {} (highest {most:.1}); \
         same for every size (within {RSS_SAME_TOLERANCE_MIB} MiB): {} (spread {:.1})",
        verdict(lowest_ratio >= TARGET_RATIO),
        verdict(most <= TARGET_RSS_MIB),
        verdict(most - least <= RSS_SAME_TOLERANCE_MIB),
        most - least,
    );
}
