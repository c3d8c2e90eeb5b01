//! WebSocket benchmark: what an idle connection costs the server, how fast events fan out,
//! and whether clients that never read slow the others down.
//!
//! Three measurements against a `chatserver` process of its own (fresh for each size and
//! shape, so its RSS is its own):
//!
//! 1. idle: N authenticated connections that only answer pings; the server's VmRSS before
//!    and after, per connection.
//! 2. fan-out: every member of the shape's channels holds a connection and reads; messages
//!    are posted over REST (`POST /api/channels/{id}/messages`, keep-alive, several in
//!    flight) at rising rates. Per step: deliveries per second and the p50/p99 latency from
//!    the moment a post was due to the moment a member read the event.
//! 3. the same steps with extra connections that never read (members of every channel of
//!    the shape): each rate runs readers only, then `--non-reader-rounds` times a step with
//!    the non-readers followed by one without; the median p99 of the steps with them is
//!    compared with the median of the readers-only steps, whose spread shows the noise. A
//!    rate holds when a readers-only step kept p99 within the limit with every delivery
//!    made; the search stops after two rates in a row that did not.
//!
//! `--floor` runs each fan-out shape first against `examples/fanout_floor`, a server that
//! only writes the frames (the ceiling of this machine and client), and prints the ratio.
//!
//! `--baseline-bin PATH` compares two builds in one run (A/B): PATH is the baseline, the
//! usual binary (`--server-bin` or the default) the candidate. Each idle size runs against
//! the baseline, then the candidate, each a fresh server. Each fan-out shape starts one
//! fresh server of each, on channels and users of its own (two servers posting to the same
//! channels of one database would see each other's events as gaps), and alternates per
//! step: at every rate the baseline's step, then the candidate's at the same offered rate
//! (with non-readers: both sides' steps with them, then both sides' readers-only steps, and
//! so on), so a drift of the machine touches both. Both sides' readers stay connected when
//! this process has the descriptors for both; otherwise (100x100 under a 20,000 limit) each
//! side's readers are connected around each of its steps only: reconnected, warmed up as at
//! the start, measured, closed. A side stops rising after two missed rates in a row, as
//! alone; the other goes on. The summary gives each side's figures, then both side by side
//! with the candidate/baseline ratio: idle KiB per connection, the highest held
//! delivered/s per shape, and the p99 at each rate (marked where it did not hold).
//!
//! Run it with `scripts/bench-ws.sh [ARGS]` (raises the file-descriptor limit), or by hand:
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_ws -- --scenario all
//! ```
//!
//! Users, channels and memberships are written straight into the database (registering
//! thousands of users over the API would cost an Argon2 hash each) and tokens are minted
//! with the server's JWT secret. Client sockets are bound to 127.0.0.2, 127.0.0.3, ... so
//! that ephemeral ports never run out, and idle connections are held by worker processes
//! (this executable again) so that no process needs more descriptors than its limit.
//!
//! The benchmark client runs on the same machine as the server and shares its CPUs: each
//! fan-out step prints the cores used by the server, by this client and by every other
//! process on the machine (which takes CPU from both).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use chatserver::auth::TokenService;
use chatserver::config::Settings;
use chatserver::db::{AnyConnection, Db};
use clap::{Parser, ValueEnum};
use diesel::{Connection, RunQueryDsl};
use futures_util::StreamExt;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use common::{
    Histogram, Spawned, cpu_count, cpu_seconds, free_ports, load_average, median, mib, now_us,
    parse_stamp, proc_status_bytes, server_bin_to_measure, server_frame, stamp, wait_healthy,
    with_database_name, work_dir,
};

const JWT_SECRET: &str = "bench-ws-secret-0123456789abcdef-0123456789";
const TOKEN_TTL_SECONDS: i64 = 86_400;
/// Idle connections' users are grouped in channels of this many members, so each idle
/// connection follows one channel, as a typical client follows a few.
const IDLE_CHANNEL_MEMBERS: usize = 100;
/// Client sockets are bound round-robin to 127.0.0.2 .. 127.0.0.(1 + this).
const SOURCE_ADDRESSES: usize = 32;
/// How long a connection may take to get its `ready`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// WebSocket handshakes in flight at once, per client process.
const CONNECT_CONCURRENCY: usize = 256;
/// Connections one idle worker process holds (each is one descriptor there).
const CONNECTIONS_PER_WORKER: usize = 9_000;
/// Descriptors the server needs besides its sockets (database, epoll, pipes, logs), kept
/// free when capping the idle count to the server's limit.
const SERVER_FD_MARGIN: usize = 64;
/// How long memory and state get to settle before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
/// A step ends once every delivery arrived, or when nothing arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(3);
/// A step has this long at most to deliver its backlog after publishing ends.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// Untimed publishing before a shape's first step: connections and caches warm up.
const WARM_UP: Duration = Duration::from_secs(2);
/// The acceptance targets.
const TARGET_KIB_PER_IDLE: f64 = 8.0;
const TARGET_DELIVERIES_PER_S: f64 = 200_000.0;
const TARGET_NON_READER_CHANGE: f64 = 0.10;

#[derive(Parser)]
#[command(about = "WebSocket load: idle memory, fan-out throughput and latency, non-readers")]
struct Args {
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Idle connection counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10_000usize, 20_000])]
    idle: Vec<usize>,
    /// Fan-out shapes as CHANNELSxMEMBERS, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["100x100", "1x5000"])]
    shapes: Vec<Shape>,
    /// Offered deliveries per second for each step, rising (messages/s = this / members).
    #[arg(long, value_delimiter = ',', default_values_t = vec![
        10_000u64, 25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 400_000, 500_000
    ])]
    deliveries: Vec<u64>,
    /// Publishing time per step, in seconds.
    #[arg(long, default_value_t = 5.0)]
    step_seconds: f64,
    /// Connections that never read, added in every other step of each rate.
    #[arg(long, default_value_t = 10)]
    non_readers: usize,
    /// Steps with the non-readers per rate, each followed by a readers-only step (after a
    /// first readers-only one): medians of both kinds are compared.
    #[arg(long, default_value_t = 3)]
    non_reader_rounds: usize,
    /// The non-readers' socket receive buffer (SO_RCVBUF) in bytes, 0 for the system's
    /// default. Small, so that what they do not read piles up in the server, not here.
    #[arg(long, default_value_t = 8192)]
    non_reader_recv_buffer: u32,
    /// REST posts in flight at most.
    #[arg(long, default_value_t = 64)]
    publish_concurrency: usize,
    /// The latency a step must hold at the 99th percentile, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    p99_limit_ms: f64,
    /// A PostgreSQL server (`postgres://user@host:port/db`) to run against instead of
    /// SQLite; a fresh database is created on it for the run and dropped after.
    #[arg(long)]
    database_url: Option<String>,
    /// The server's HTTP worker threads (`WORKERS`).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The chat server binary (default: `chatserver` in this example's profile directory).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// A/B: a second chat server binary, the baseline; every measurement runs against it
    /// and against the candidate (the binary above), interleaved, and the summary compares.
    #[arg(long)]
    baseline_bin: Option<PathBuf>,
    /// Parent of the temporary directory holding the database and the servers' files.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Extra environment for the server, KEY=VALUE (repeatable), e.g. WS_QUEUE_CAPACITY=64
    /// or MALLOC_ARENA_MAX=2.
    #[arg(long = "server-env", value_parser = parse_key_value)]
    server_env: Vec<(String, String)>,
    /// Open every idle connection asked for even beyond the server's descriptor limit
    /// (by default the count is capped to what the limit allows, and the output says so).
    #[arg(long)]
    no_fd_cap: bool,
    /// Keep the temporary directory (the servers' logs and the database) and print its path.
    #[arg(long)]
    keep: bool,
    /// Run each fan-out shape against `examples/fanout_floor` first (readers only): the least
    /// a server must do to deliver the same frames here. The summary gives the chat server's
    /// highest held rate as a share of the floor's, measured in the same run.
    #[arg(long)]
    floor: bool,
    /// Internal: run as an idle-connection worker holding the connections of these tokens.
    #[arg(long, hide = true, requires = "worker_server")]
    worker_tokens: Option<PathBuf>,
    #[arg(long, hide = true)]
    worker_server: Option<SocketAddr>,
    /// Internal: the worker's first connection number (for spreading source addresses).
    #[arg(long, hide = true, default_value_t = 0)]
    worker_first: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Idle,
    Fanout,
    All,
}

/// CHANNELS x MEMBERS: every member of every channel holds one connection.
#[derive(Clone, Copy, Debug)]
struct Shape {
    channels: usize,
    members: usize,
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (c, m) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("{s:?}: expected CHANNELSxMEMBERS, e.g. 100x100"))?;
        let number = |t: &str| t.trim().parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
        let shape = Shape {
            channels: number(c)?,
            members: number(m)?,
        };
        if shape.channels == 0 || shape.members == 0 {
            return Err(format!("{s:?}: channels and members must be positive"));
        }
        Ok(shape)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.channels, self.members)
    }
}

impl Shape {
    fn connections(&self) -> usize {
        self.channels * self.members
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let (Some(tokens), Some(server)) = (&args.worker_tokens, args.worker_server) {
        return idle_worker(tokens, server, args.worker_first).await;
    }
    run(args).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.deliveries.windows(2).all(|w| w[0] < w[1]),
        "--deliveries must rise"
    );
    let server_bin = server_bin_to_measure(args.server_bin.as_deref())?;
    if let Some(baseline) = &args.baseline_bin {
        ensure!(
            baseline.is_file(),
            "--baseline-bin {}: no such file",
            baseline.display()
        );
    }
    // A/B: the baseline's server and the candidate's are up together during a shape.
    let sides = if args.baseline_bin.is_some() { 2 } else { 1 };
    let (idle, fanout) = match args.scenario {
        Scenario::Idle => (true, false),
        Scenario::Fanout => (false, true),
        Scenario::All => (true, true),
    };
    let fds = fd_limits("self")?;
    if fanout {
        // One side at a time at least (see `fanout_shape`).
        let largest = args.shapes.iter().map(Shape::connections).max();
        let needed = fanout_descriptors(&args, largest.unwrap_or(0), 1);
        ensure!(
            fds.0 >= needed as u64,
            "the fan-out needs about {needed} descriptors in this process and the limit is \
             {}: raise it (`ulimit -n`, or run scripts/bench-ws.sh)",
            fds.0
        );
    }

    // Declared first so it is removed last, after the server processes have stopped.
    let work = work_dir(args.tmp_dir.as_deref())?;
    let database = Database::create(args.database_url.as_deref(), work.path()).await?;
    println!(
        "chat server: {}; {} database; data in {}",
        server_bin.display(),
        database.backend(),
        work.path().display()
    );
    if let Some(baseline) = &args.baseline_bin {
        println!(
            "A/B: baseline {}, candidate {} (the chat server above), interleaved",
            baseline.display(),
            server_bin.display()
        );
    }
    for (key, value) in &args.server_env {
        println!("server environment: {key}={value}");
    }
    println!(
        "machine: {} CPUs shared by the server and this client; load average {}; \
         descriptor limit {} (hard {})",
        cpu_count(),
        load_average(),
        fds.0,
        fds.1
    );

    let plan = Plan {
        idle_users: if idle {
            args.idle.iter().copied().max().unwrap_or(0)
        } else {
            0
        },
        shapes: if fanout { args.shapes.clone() } else { vec![] },
        non_readers: args.non_readers,
        sides,
    };
    let started = Instant::now();
    let population = seed(&database.url, &plan).await?;
    println!(
        "seeded {} users in {:.1} s",
        population.user_count,
        started.elapsed().as_secs_f64()
    );
    let bench = Bench {
        args: &args,
        side: None,
        server_bin,
        work: work.path().to_owned(),
        database_url: database.url.clone(),
        population: Arc::new(population),
    };
    // The servers measured, in the order they run: the baseline first in A/B mode.
    let benches: Vec<Bench> = match &args.baseline_bin {
        None => vec![bench.clone()],
        Some(baseline) => vec![
            Bench {
                side: Some(Side::Baseline),
                server_bin: baseline.clone(),
                ..bench.clone()
            },
            Bench {
                side: Some(Side::Candidate),
                ..bench.clone()
            },
        ],
    };

    // One list per server, in the order of `benches`.
    let mut idle_rows: Vec<Vec<IdleRow>> = benches.iter().map(|_| Vec::new()).collect();
    if idle {
        for &n in &args.idle {
            for (rows, side) in idle_rows.iter_mut().zip(&benches) {
                rows.push(side.idle(n).await?);
            }
        }
    }
    let mut shape_results: Vec<Vec<ShapeResult>> = benches.iter().map(|_| Vec::new()).collect();
    let mut floor_results = Vec::new();
    if fanout {
        let floor = Bench {
            server_bin: server_bin_beside(&bench.server_bin, "examples/fanout_floor")?,
            ..bench.clone()
        };
        for (i, &shape) in args.shapes.iter().enumerate() {
            // Each side's own channels and users (see `Plan::sides`).
            let users: Vec<&ShapeUsers> = bench
                .population
                .shapes
                .iter()
                .map(|side| &side[i])
                .collect();
            if args.floor {
                println!("\n--- the floor: {}", floor.server_bin.display());
                floor_results.extend(
                    fanout_shape(std::slice::from_ref(&floor), shape, &users[..1], false).await?,
                );
            }
            let results = fanout_shape(&benches, shape, &users, args.non_readers > 0).await?;
            for (list, result) in shape_results.iter_mut().zip(results) {
                list.push(result);
            }
        }
    }

    println!("\n=== summary ===");
    for ((side, idle_rows), shape_results) in benches.iter().zip(&idle_rows).zip(&shape_results) {
        if let Some(which) = side.side {
            println!("--- {which}: {}", side.server_bin.display());
        }
        print_idle_summary(idle_rows);
        if !floor_results.is_empty() {
            println!("the floor (examples/fanout_floor, readers only):");
            print_fanout_summary(&floor_results, args.p99_limit_ms);
            println!("the chat server:");
        }
        print_fanout_summary(shape_results, args.p99_limit_ms);
        print_floor_ratios(shape_results, &floor_results, args.p99_limit_ms);
    }
    if let [baseline, candidate] = &benches[..] {
        print_ab_summary(
            (baseline, candidate),
            (&idle_rows[0], &idle_rows[1]),
            (&shape_results[0], &shape_results[1]),
            args.p99_limit_ms,
        );
    }
    database.drop_if_created().await;
    if args.keep {
        println!("kept {}", work.keep().display());
    }
    Ok(())
}

/// What one run needs: the arguments, the binary, and the seeded users.
#[derive(Clone)]
struct Bench<'a> {
    args: &'a Args,
    /// Which side of an A/B run this server is (None outside one).
    side: Option<Side>,
    server_bin: PathBuf,
    work: PathBuf,
    database_url: String,
    population: Arc<Population>,
}

/// The two servers of an A/B run (`--baseline-bin`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Baseline,
    Candidate,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: row labels are padded to a width.
        f.pad(match self {
            Side::Baseline => "baseline",
            Side::Candidate => "candidate",
        })
    }
}

impl Bench<'_> {
    /// ` [baseline]` or ` [candidate]` in an A/B run, else nothing: for headings.
    fn tag(&self) -> String {
        self.side.map(|s| format!(" [{s}]")).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Idle connections

struct IdleRow {
    asked: usize,
    connections: usize,
    capped_by: Option<u64>,
    connect_seconds: f64,
    rss_before: u64,
    rss_after: u64,
}

impl IdleRow {
    fn kib_per_connection(&self) -> f64 {
        per_connection_kib(self.rss_after, self.rss_before, self.connections)
    }
}

fn per_connection_kib(rss: u64, baseline: u64, connections: usize) -> f64 {
    rss.saturating_sub(baseline) as f64 / 1024.0 / connections.max(1) as f64
}

impl Bench<'_> {
    async fn idle(&self, asked: usize) -> anyhow::Result<IdleRow> {
        println!("\n=== idle: {asked} connections{} ===", self.tag());
        let mut server = self.start_server(&format!("idle-{asked}")).await?;
        warm_up_connections(&server, &self.population.idle[..asked.min(100)]).await?;
        tokio::time::sleep(SETTLE).await;

        // The server holds one descriptor per connection: more than its limit allows
        // cannot be accepted (actix stops accepting while `accept` fails with EMFILE).
        let (limit, _) = fd_limits(&server.pid().to_string())?;
        let in_use = open_fds(server.pid())?;
        let room = (limit as usize).saturating_sub(in_use + SERVER_FD_MARGIN);
        let (count, capped_by) = if asked > room && !self.args.no_fd_cap {
            println!(
                "the server's descriptor limit is {limit} ({in_use} in use): capping {asked} \
                 connections to {room}"
            );
            (room, Some(limit))
        } else {
            (asked, None)
        };

        let rss_before = server.rss()?;
        let started = Instant::now();
        let workers = IdleWorkers::start(
            &self.population.idle[..count],
            server.addr,
            &self.work.join(format!("idle-{asked}-tokens")),
        )?;
        let ready = workers.wait_ready().await?;
        let connect_seconds = started.elapsed().as_secs_f64();
        ensure!(
            ready.connected > 0,
            "no idle connection succeeded (first error: {}); server log: {}",
            ready.first_error,
            server.process.log.display()
        );
        if ready.failed > 0 {
            // Measure what did connect, and say what did not.
            println!(
                "{} of {count} connections failed (first: {}); server log: {}",
                ready.failed,
                ready.first_error,
                server.process.log.display()
            );
        }
        tokio::time::sleep(SETTLE).await;
        server.process.check_running()?;
        let rss_after = server.rss()?;
        let sockets = open_fds(server.pid())?.saturating_sub(in_use);
        drop(workers);
        tokio::time::sleep(SETTLE).await;
        let rss_closed = server.rss()?;
        let left_open = open_fds(server.pid())?.saturating_sub(in_use);

        let row = IdleRow {
            asked,
            connections: ready.connected,
            capped_by,
            connect_seconds,
            rss_before,
            rss_after,
        };
        println!(
            "{} connections ready in {:.1} s ({} server sockets); server VmRSS {:.1} MiB before, \
             {:.1} MiB with them, {:.1} MiB after they closed ({} sockets left): {:.2} KiB per \
             connection",
            row.connections,
            connect_seconds,
            sockets,
            mib(rss_before),
            mib(rss_after),
            mib(rss_closed),
            left_open,
            row.kib_per_connection()
        );
        Ok(row)
    }
}

/// Opens and closes a few connections, so the baseline RSS already holds what the first
/// connections allocate once (pools, per-thread caches).
async fn warm_up_connections(server: &Server, tokens: &[String]) -> anyhow::Result<()> {
    let (connections, errors) = connect_all(server.addr, tokens, 0, None, |ws| ws).await;
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context("warm-up connection"));
    }
    drop(connections);
    Ok(())
}

/// Worker processes (this executable with `--worker-tokens`) that each hold a share of the
/// idle connections until their stdin closes.
struct IdleWorkers {
    workers: Vec<Worker>,
}

struct Worker {
    process: Spawned,
    stdin: Option<ChildStdin>,
}

struct Ready {
    connected: usize,
    failed: usize,
    first_error: String,
}

impl IdleWorkers {
    fn start(tokens: &[String], server: SocketAddr, dir: &Path) -> anyhow::Result<IdleWorkers> {
        std::fs::create_dir_all(dir)?;
        let exe = std::env::current_exe()?;
        let mut workers = Vec::new();
        for (i, share) in tokens.chunks(CONNECTIONS_PER_WORKER).enumerate() {
            let path = dir.join(format!("worker-{i}.tokens"));
            std::fs::write(&path, share.join("\n"))?;
            let mut command = Command::new(&exe);
            command
                .arg("--worker-tokens")
                .arg(&path)
                .arg("--worker-server")
                .arg(server.to_string())
                .arg("--worker-first")
                .arg((i * CONNECTIONS_PER_WORKER).to_string());
            let log = dir.join(format!("worker-{i}.log"));
            let mut process = Spawned::start("idle worker", command, &log, true)?;
            let stdin = process.child.stdin.take();
            workers.push(Worker { process, stdin });
        }
        Ok(IdleWorkers { workers })
    }

    /// Waits for each worker's `ready CONNECTED FAILED [ERROR]` line.
    async fn wait_ready(&self) -> anyhow::Result<Ready> {
        let mut total = Ready {
            connected: 0,
            failed: 0,
            first_error: String::new(),
        };
        let mut lines = Vec::new();
        for worker in &self.workers {
            let stdout = worker.process.stdout.clone().context("worker stdout")?;
            lines.push(tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                let mut stdout = stdout.lock().unwrap_or_else(|e| e.into_inner());
                stdout.read_line(&mut line).map(|_| line)
            }));
        }
        for (worker, line) in self.workers.iter().zip(lines) {
            let line = line.await??;
            let mut fields = line.trim().splitn(4, ' ');
            ensure!(
                fields.next() == Some("ready"),
                "an idle worker ended without reporting (log: {})",
                worker.process.log.display()
            );
            let connected: usize = fields.next().context("connected")?.parse()?;
            let failed: usize = fields.next().context("failed")?.parse()?;
            total.connected += connected;
            total.failed += failed;
            if total.first_error.is_empty() {
                total.first_error = fields.next().unwrap_or_default().to_owned();
            }
        }
        Ok(total)
    }
}

impl Drop for IdleWorkers {
    fn drop(&mut self) {
        // Closing stdin tells a worker to exit, which closes its sockets.
        for worker in &mut self.workers {
            worker.stdin.take();
        }
        for worker in &mut self.workers {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = worker.process.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The worker side: connect, report, then hold the connections (answering pings) until
/// stdin closes.
async fn idle_worker(tokens: &Path, server: SocketAddr, first: usize) -> anyhow::Result<()> {
    let tokens: Vec<String> = std::fs::read_to_string(tokens)?
        .lines()
        .map(str::to_owned)
        .collect();
    // The holders end with the process.
    let (holders, errors) =
        connect_all(server, &tokens, first, None, |ws| tokio::spawn(hold(ws))).await;
    let first_error = errors
        .first()
        .map(|e| format!("{e:#}").replace('\n', " "))
        .unwrap_or_default();
    println!("ready {} {} {first_error}", holders.len(), errors.len());
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Fan-out

/// Who is connected during a step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clients {
    Readers,
    /// The readers plus the non-readers.
    NonReaders,
}

/// One step: publishing at one rate.
struct StepResult {
    offered: u64,
    clients: Clients,
    target_msgs_per_s: f64,
    sent_msgs_per_s: f64,
    failed_posts: u64,
    first_post_error: Option<String>,
    expected: u64,
    received: u64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The REST round trip of a post, median.
    post_p50_ms: f64,
    server_cores: f64,
    bench_cores: f64,
    /// Cores that other processes on the machine used meanwhile.
    other_cores: f64,
    /// What became of the non-readers.
    non_readers: Option<NonReaderFate>,
}

impl StepResult {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    /// p99 within the limit, every delivery made, and the publisher reached its rate (else
    /// the offered load was not what the row says).
    fn held(&self, p99_limit_ms: f64) -> bool {
        self.p99_ms <= p99_limit_ms
            && self.lost() == 0
            && self.failed_posts == 0
            && self.sent_msgs_per_s >= 0.95 * self.target_msgs_per_s
    }
}

/// The steps at one rate: readers only, then with non-readers, then readers only again.
struct Round {
    /// Readers-only steps: the first, then one after each step with non-readers.
    readers: Vec<StepResult>,
    /// Steps with the non-readers, interleaved with the readers-only ones.
    non_readers: Vec<StepResult>,
}

impl Round {
    /// The rate holds when one of its readers-only steps held: the client shares a busy
    /// machine, and a stall elsewhere can spoil a step (every row is printed).
    fn held(&self, p99_limit_ms: f64) -> bool {
        self.held_readers(p99_limit_ms).next().is_some()
    }

    /// The readers-only steps that held.
    fn held_readers(&self, p99_limit_ms: f64) -> impl Iterator<Item = &StepResult> {
        self.readers.iter().filter(move |r| r.held(p99_limit_ms))
    }

    /// The readers-only step that held with the lowest p99, or the first one.
    fn best_readers(&self, p99_limit_ms: f64) -> &StepResult {
        self.held_readers(p99_limit_ms)
            .min_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))
            .unwrap_or(&self.readers[0])
    }

    /// The readers-only p99: the median of the readers-only steps.
    fn readers_p99(&self) -> f64 {
        median(self.readers.iter().map(|r| r.p99_ms))
    }

    /// The readers' p99 with the non-readers connected: the median of those steps.
    fn non_readers_p99(&self) -> Option<f64> {
        (!self.non_readers.is_empty()).then(|| median(self.non_readers.iter().map(|r| r.p99_ms)))
    }

    /// How much the non-readers moved the readers' p99 (median against median), relative.
    fn non_reader_change(&self) -> Option<f64> {
        Some(change(self.readers_p99(), self.non_readers_p99()?))
    }

    /// How far apart the readers-only steps are (highest minus lowest p99), relative to
    /// their median: the noise a change is judged against.
    fn noise(&self) -> Option<f64> {
        if self.readers.len() < 2 {
            return None;
        }
        let p99s = self.readers.iter().map(|r| r.p99_ms);
        let spread = p99s.clone().fold(f64::MIN, f64::max) - p99s.fold(f64::MAX, f64::min);
        Some(spread / self.readers_p99())
    }
}

struct ShapeResult {
    shape: Shape,
    rounds: Vec<Round>,
}

/// The seeded users of one shape.
struct ShapeUsers {
    channel_ids: Vec<i32>,
    /// Tokens of every member of every channel (one connection each).
    members: Vec<String>,
    /// Tokens of users who belong to every channel of the shape and never read.
    non_readers: Vec<String>,
}

/// One server's part of a fan-out shape: the process, its readers, what its steps gave.
struct FanoutSide<'a> {
    bench: &'a Bench<'a>,
    shape: Shape,
    /// Its channels and users: each side has its own (see `Plan::sides`).
    users: &'a ShapeUsers,
    server: Server,
    readers: Vec<tokio::task::JoinHandle<()>>,
    stats: Arc<Stats>,
    publisher: Publisher,
    rss_empty: u64,
    rounds: Vec<Round>,
    /// Rates missed in a row; the side stops rising at two.
    misses: usize,
    /// The index of its next step in `stats` (0 is the warm-up).
    next_step: usize,
    /// Readers connected only around each step: an A/B run without the descriptors for
    /// both sides' readers at once.
    rotate: bool,
}

impl Bench<'_> {
    /// A fresh server with every member of `shape` connected and reading, warmed up.
    async fn fanout_side<'s>(
        &'s self,
        shape: Shape,
        users: &'s ShapeUsers,
    ) -> anyhow::Result<FanoutSide<'s>> {
        let args = self.args;
        let server = self.start_server(&format!("fanout-{shape}")).await?;
        let max_steps = 1 + (1 + 2 * args.non_reader_rounds) * args.deliveries.len();
        let stats = Arc::new(Stats::new(max_steps));
        let rss_empty = server.rss()?;
        let started = Instant::now();
        let (readers, errors) = connect_all(server.addr, &users.members, 0, None, |ws| {
            tokio::spawn(read_events(ws, stats.clone()))
        })
        .await;
        if let Some(e) = errors.into_iter().next() {
            return Err(e.context(format!(
                "connecting the readers (server log: {})",
                server.process.log.display()
            )));
        }
        let rss_connected = server.rss()?;
        println!(
            "{}{} readers ready in {:.1} s; server VmRSS {:.1} MiB, {:.1} MiB with them \
             ({:.1} KiB per connection); load average {}",
            self.side.map(|s| format!("{s}: ")).unwrap_or_default(),
            readers.len(),
            started.elapsed().as_secs_f64(),
            mib(rss_empty),
            mib(rss_connected),
            per_connection_kib(rss_connected, rss_empty, readers.len()),
            load_average()
        );
        let publisher = Publisher::new(
            &server.base_url,
            &self.population.publisher,
            args.publish_concurrency,
        )?;
        let side = FanoutSide {
            bench: self,
            shape,
            users,
            server,
            readers,
            stats,
            publisher,
            rss_empty,
            rounds: Vec::new(),
            misses: 0,
            next_step: 1,
            rotate: false,
        };
        // Step 0: warm-up, not reported.
        side.runner().warm_up(args.deliveries[0]).await?;
        Ok(side)
    }
}

impl FanoutSide<'_> {
    fn runner(&self) -> StepRunner<'_> {
        let args = self.bench.args;
        StepRunner {
            server: &self.server,
            non_reader_recv_buffer: (args.non_reader_recv_buffer > 0)
                .then_some(args.non_reader_recv_buffer),
            stats: &self.stats,
            users: self.users,
            shape: self.shape,
            publisher: &self.publisher,
            duration: Duration::from_secs_f64(args.step_seconds),
        }
    }

    /// Runs and prints the next step at `offered`.
    async fn step(&mut self, offered: u64, clients: Clients) -> anyhow::Result<StepResult> {
        if self.rotate {
            self.reconnect().await?;
        }
        let index = self.next_step;
        self.next_step += 1;
        let step = self.runner().step(index, offered, clients).await?;
        print_step(&step, self.bench.args.p99_limit_ms, self.bench.side);
        if self.rotate {
            self.disconnect().await;
        }
        Ok(step)
    }

    /// Closes the readers' connections (their descriptors are free on return).
    async fn disconnect(&mut self) {
        for reader in self.readers.drain(..) {
            reader.abort();
            // Cancelled: the task, and its socket, are gone.
            let _ = reader.await;
        }
    }

    /// Connects the readers again, then publishes untimed, as when the side started.
    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let stats = &self.stats;
        let (readers, errors) = connect_all(self.server.addr, &self.users.members, 0, None, |ws| {
            tokio::spawn(read_events(ws, stats.clone()))
        })
        .await;
        self.readers = readers;
        if let Some(e) = errors.into_iter().next() {
            return Err(e.context(format!(
                "reconnecting the readers (server log: {})",
                self.server.process.log.display()
            )));
        }
        self.runner().warm_up(self.bench.args.deliveries[0]).await
    }

    /// Still rising: fewer than two rates missed in a row.
    fn rising(&self) -> bool {
        self.misses < 2
    }
}

/// Descriptors this process needs for a fan-out with `connections` readers per server and
/// `sides` servers' readers connected at once.
fn fanout_descriptors(args: &Args, connections: usize, sides: usize) -> usize {
    sides * (connections + args.publish_concurrency) + args.non_readers + 100
}

/// The fan-out steps of `shape` against each of `benches` (one server, or the baseline and
/// the candidate of an A/B run, whose steps alternate): one result per bench, in order.
///
/// In an A/B run both sides keep their readers connected throughout when this process has
/// the descriptors for both; otherwise each side's readers are connected only around its
/// own steps (reconnected, warmed up, measured, closed), so that the steps still alternate.
async fn fanout_shape(
    benches: &[Bench<'_>],
    shape: Shape,
    users: &[&ShapeUsers],
    with_non_readers: bool,
) -> anyhow::Result<Vec<ShapeResult>> {
    let args = benches.first().context("no server to measure")?.args;
    println!(
        "\n=== fan-out {shape}: {} channels x {} members = {} reading connections ===",
        shape.channels,
        shape.members,
        shape.connections()
    );
    ensure!(users.len() == benches.len(), "one set of users per server");
    let limit = fd_limits("self")?.0;
    let needed = fanout_descriptors(args, shape.connections(), benches.len());
    let rotate = benches.len() > 1 && limit < needed as u64;
    if rotate {
        println!(
            "A/B: both sides' readers would need about {needed} descriptors here and the limit \
             is {limit}: each side's readers are connected only around its own steps \
             (reconnected, {} s of untimed posts at {} deliveries/s, the step, closed)",
            WARM_UP.as_secs(),
            args.deliveries[0]
        );
    }
    let mut sides = Vec::new();
    for (bench, &users) in benches.iter().zip(users) {
        let mut side = bench.fanout_side(shape, users).await?;
        if rotate {
            side.rotate = true;
            side.disconnect().await;
        }
        sides.push(side);
    }

    println!(
        "posting over REST, up to {} in flight; {} s per step; latency = read time - due \
         time of the post; srv/bench/other = cores used by the server, this client and every \
         other process; {} non-readers, members of \
         every channel, receive buffer {}",
        args.publish_concurrency,
        args.step_seconds,
        if with_non_readers {
            args.non_readers
        } else {
            0
        },
        match args.non_reader_recv_buffer {
            0 => "the system's default".to_owned(),
            n => format!("{n} bytes"),
        }
    );
    if sides.len() > 1 {
        println!(
            "A/B: at each rate, each step runs against the baseline then the candidate (both \
             servers up, {}; only one is published to at a time)",
            if rotate {
                "each side's readers connected around its steps only"
            } else {
                "both sets of readers connected"
            }
        );
    }
    let ab = sides.len() > 1;
    print_step_header(ab);
    let non_reader_rounds = if with_non_readers {
        args.non_reader_rounds
    } else {
        0
    };
    for &offered in &args.deliveries {
        // Two misses in a row end a side: one alone may be a stall caused elsewhere.
        let mut active: Vec<&mut FanoutSide> = sides.iter_mut().filter(|s| s.rising()).collect();
        if active.is_empty() {
            break;
        }
        for side in &mut active {
            let readers = side.step(offered, Clients::Readers).await?;
            side.rounds.push(Round {
                readers: vec![readers],
                non_readers: Vec::new(),
            });
        }
        // Interleaved, so that a drift of the machine touches both kinds of step.
        for _ in 0..non_reader_rounds {
            for side in &mut active {
                let with = side.step(offered, Clients::NonReaders).await?;
                side.rounds
                    .last_mut()
                    .expect("pushed")
                    .non_readers
                    .push(with);
            }
            for side in &mut active {
                let again = side.step(offered, Clients::Readers).await?;
                side.rounds.last_mut().expect("pushed").readers.push(again);
            }
        }
        for side in &mut active {
            let round = side.rounds.last().expect("pushed");
            if let (Some(delta), Some(noise)) = (round.non_reader_change(), round.noise()) {
                println!(
                    "{}{:>9} readers' p99 median {:.2} ms alone ({} steps, spread {:.0}%), \
                     {:.2} ms with the non-readers ({} steps): {:+.1}%",
                    side.bench
                        .side
                        .map(|s| format!("{s:<9} "))
                        .unwrap_or_default(),
                    offered,
                    round.readers_p99(),
                    round.readers.len(),
                    noise * 100.0,
                    round.non_readers_p99().unwrap_or_default(),
                    round.non_readers.len(),
                    delta * 100.0
                );
            }
            side.misses = if round.held(args.p99_limit_ms) {
                0
            } else {
                side.misses + 1
            };
        }
    }
    let mut results = Vec::new();
    for mut side in sides {
        if let Some(which) = side.bench.side {
            println!("{which}:");
        }
        side.stats.print_anomalies();
        side.server.process.check_running()?;
        for reader in &side.readers {
            reader.abort();
        }
        // Traffic touches every page of the per-connection buffers, idle connections not.
        let rss_after = side.server.rss()?;
        println!(
            "server VmRSS after the steps: {:.1} MiB ({:.1} KiB per reading connection)",
            mib(rss_after),
            per_connection_kib(rss_after, side.rss_empty, shape.connections())
        );
        results.push(ShapeResult {
            shape,
            rounds: side.rounds,
        });
    }
    Ok(results)
}

struct StepRunner<'a> {
    server: &'a Server,
    non_reader_recv_buffer: Option<u32>,
    stats: &'a Arc<Stats>,
    users: &'a ShapeUsers,
    shape: Shape,
    publisher: &'a Publisher,
    duration: Duration,
}

impl StepRunner<'_> {
    async fn warm_up(&self, offered: u64) -> anyhow::Result<()> {
        let rate = offered as f64 / self.shape.members as f64;
        // Step 0 counts every warm-up (a side whose readers reconnect warms up each time).
        let warm_up = &self.stats.steps[0];
        let before = warm_up.received.load(Ordering::Relaxed);
        let published = self
            .publisher
            .publish(0, rate, WARM_UP, &self.users.channel_ids)
            .await;
        if let Some(e) = published.first_error {
            bail!("warm-up posts failed: {e}");
        }
        let expected = published.ok * self.shape.members as u64;
        wait_for_deliveries(warm_up, before + expected).await;
        Ok(())
    }

    async fn step(
        &self,
        index: usize,
        offered: u64,
        clients: Clients,
    ) -> anyhow::Result<StepResult> {
        let target = offered as f64 / self.shape.members as f64;
        let with_non_readers = clients == Clients::NonReaders;
        let non_readers = if with_non_readers {
            let (connections, errors) = connect_all(
                self.server.addr,
                &self.users.non_readers,
                0,
                self.non_reader_recv_buffer,
                |ws| ws,
            )
            .await;
            if let Some(e) = errors.into_iter().next() {
                return Err(e.context("connecting the non-readers"));
            }
            connections
        } else {
            Vec::new()
        };

        let cpu_before = CpuSnapshot::take(self.server.pid())?;
        let published = self
            .publisher
            .publish(index, target, self.duration, &self.users.channel_ids)
            .await;
        let step = &self.stats.steps[index];
        let expected = published.ok * self.shape.members as u64;
        wait_for_deliveries(step, expected).await;
        let cpu = CpuSnapshot::take(self.server.pid())?.since(&cpu_before);

        // After the measurement: did the non-readers get closed as too slow?
        let non_readers = if with_non_readers {
            Some(non_reader_fate(non_readers).await)
        } else {
            None
        };
        let received = step.received.load(Ordering::Relaxed);
        // From the first post's due time to the last delivery, and at least the step: the
        // last post is due one interval before the step ends.
        let window_us = step
            .last_us
            .load(Ordering::Relaxed)
            .saturating_sub(published.start_us)
            .max(self.duration.as_micros() as u64);
        Ok(StepResult {
            offered,
            clients,
            target_msgs_per_s: target,
            sent_msgs_per_s: published.sent_per_s,
            failed_posts: published.failed,
            first_post_error: published.first_error,
            expected,
            received,
            delivered_per_s: received as f64 * 1e6 / window_us as f64,
            p50_ms: step.latency.percentile(0.50) as f64 / 1000.0,
            p99_ms: step.latency.percentile(0.99) as f64 / 1000.0,
            max_ms: step.latency.percentile(1.0) as f64 / 1000.0,
            post_p50_ms: published.round_trip.percentile(0.50) as f64 / 1000.0,
            server_cores: cpu.server / cpu.wall,
            bench_cores: cpu.bench / cpu.wall,
            other_cores: cpu.others / cpu.wall,
            non_readers,
        })
    }
}

/// Waits until `expected` deliveries arrived, or nothing arrived for `DRAIN_QUIET`.
async fn wait_for_deliveries(step: &StepStats, expected: u64) {
    let started = Instant::now();
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let received = step.received.load(Ordering::Relaxed);
        if received >= expected || started.elapsed() > DRAIN_MAX {
            return;
        }
        if received != last_count {
            last_count = received;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > DRAIN_QUIET {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the non-readers' connections hold at the end of a step.
struct NonReaderFate {
    connections: usize,
    /// Closed by the server with 4008 (too slow).
    closed_slow: usize,
    /// Frames that were waiting for them (in the kernel's buffers, and the server's).
    backlog_frames: u64,
}

impl std::fmt::Display for NonReaderFate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} non-readers closed 4008, {} frames waiting each",
            self.closed_slow,
            self.connections,
            self.backlog_frames / self.connections.max(1) as u64
        )
    }
}

/// Reads what the non-readers have waiting, up to a close frame, and counts the 4008s.
async fn non_reader_fate(connections: Vec<Ws>) -> NonReaderFate {
    let total = connections.len();
    let mut reads = JoinSet::new();
    for mut ws in connections {
        reads.spawn(async move {
            let mut frames = 0;
            // A connection that was not closed goes quiet once its backlog is read.
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_millis(500), ws.next()).await
            {
                if let Message::Close(frame) = message {
                    return (frame.is_some_and(|f| u16::from(f.code) == 4008), frames);
                }
                frames += 1;
            }
            (false, frames)
        });
    }
    let ends = reads.join_all().await;
    NonReaderFate {
        connections: total,
        closed_slow: ends.iter().filter(|(slow, _)| *slow).count(),
        backlog_frames: ends.iter().map(|(_, frames)| frames).sum(),
    }
}

/// A reader: records each `message_created` it reads with the latency stamped in it.
///
/// After the handshake it reads the socket itself rather than through tungstenite: the
/// client shares the machine's two cores with the server, and a lean reader leaves more of
/// them to what is measured. Nothing is buffered in tungstenite at this point: the server
/// sends nothing after `ready` until the first post.
async fn read_events(mut ws: Ws, stats: Arc<Stats>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let socket = ws.get_mut();
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(4096);
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut at = 0;
        while let Some((opcode, payload, next)) = server_frame(&buf[at..]) {
            match opcode {
                0x1 => stats.record_frame(std::str::from_utf8(payload).unwrap_or("")),
                0x8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    stats.record_close(code);
                    return;
                }
                // A ping: answer with an empty pong, masked as a client must (with zeros).
                0x9 if socket.write_all(&[0x8A, 0x80, 0, 0, 0, 0]).await.is_err() => break,
                _ => {}
            }
            at += next;
        }
        buf.drain(..at);
    }
    stats.record_close(None);
}

// ---------------------------------------------------------------------------------------
// Publishing

struct Publisher {
    http: reqwest::Client,
    base_url: String,
    token: String,
    slots: Arc<Semaphore>,
    concurrency: u32,
}

struct Published {
    /// The REST round trips, in µs.
    round_trip: Arc<Histogram>,
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    start_us: u64,
    sent_per_s: f64,
}

impl Publisher {
    fn new(base_url: &str, token: &str, concurrency: usize) -> anyhow::Result<Publisher> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .build()?;
        Ok(Publisher {
            http,
            base_url: base_url.to_owned(),
            token: token.to_owned(),
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency: u32::try_from(concurrency)?,
        })
    }

    /// Posts at `per_second` for `duration`, round-robin over `channels`, open loop: each
    /// post is stamped with the time it was due, so a publisher that falls behind (all
    /// slots busy) shows up as latency instead of hiding it.
    async fn publish(
        &self,
        step: usize,
        per_second: f64,
        duration: Duration,
        channels: &[i32],
    ) -> Published {
        let count = (per_second * duration.as_secs_f64()).round().max(1.0) as u64;
        let interval_us = 1e6 / per_second;
        let start = Instant::now();
        let start_us = now_us();
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(Mutex::new(None::<String>));
        let round_trip = Arc::new(Histogram::new());
        for i in 0..count {
            let offset_us = (i as f64 * interval_us) as u64;
            tokio::time::sleep_until((start + Duration::from_micros(offset_us)).into()).await;
            let permit = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let channel = channels[i as usize % channels.len()];
            let request = self
                .http
                .post(format!("{}/api/channels/{channel}/messages", self.base_url))
                .bearer_auth(&self.token)
                .json(&json!({ "content": stamp(step, start_us + offset_us) }));
            let (ok, failed, first_error) = (ok.clone(), failed.clone(), first_error.clone());
            let round_trip = round_trip.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                match post(request).await {
                    Ok(()) => {
                        round_trip.record(sent.elapsed().as_micros() as u64);
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert_with(|| format!("{e:#}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                drop(permit);
            });
        }
        let sending = start.elapsed().as_secs_f64();
        // Every slot free again: every post has been answered.
        drop(self.slots.acquire_many(self.concurrency).await);
        let first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
        Published {
            round_trip,
            ok: ok.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            first_error,
            start_us,
            // The last post went out at `sending`; the first at 0; count - 1 intervals.
            sent_per_s: if count > 1 {
                (count - 1) as f64 / sending
            } else {
                per_second
            },
        }
    }
}

async fn post(request: reqwest::RequestBuilder) -> anyhow::Result<()> {
    let response = request.send().await?;
    let status = response.status();
    // Read the body to its end so the connection goes back to the pool.
    let body = response.bytes().await?;
    ensure!(
        status == reqwest::StatusCode::CREATED,
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Latency statistics, shared by every reader task

struct Stats {
    steps: Vec<StepStats>,
    /// Frames without a stamp (other event types, errors).
    other_frames: AtomicU64,
    /// Readers' close codes (0: the socket ended without one): a reader should never close.
    closes: Mutex<BTreeMap<u16, u64>>,
}

struct StepStats {
    latency: Histogram,
    received: AtomicU64,
    /// When the step's last delivery was read (µs since the start).
    last_us: AtomicU64,
}

impl Stats {
    fn new(steps: usize) -> Stats {
        Stats {
            steps: (0..steps)
                .map(|_| StepStats {
                    latency: Histogram::new(),
                    received: AtomicU64::new(0),
                    last_us: AtomicU64::new(0),
                })
                .collect(),
            other_frames: AtomicU64::new(0),
            closes: Mutex::default(),
        }
    }

    fn record_frame(&self, frame: &str) {
        let now = now_us();
        match parse_stamp(frame).and_then(|(i, due)| Some((self.steps.get(i)?, due))) {
            Some((step, due)) => {
                step.latency.record(now.saturating_sub(due));
                step.received.fetch_add(1, Ordering::Relaxed);
                step.last_us.fetch_max(now, Ordering::Relaxed);
            }
            None => {
                self.other_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn record_close(&self, code: Option<u16>) {
        let mut closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        *closes.entry(code.unwrap_or(0)).or_default() += 1;
    }

    fn print_anomalies(&self) {
        let other = self.other_frames.load(Ordering::Relaxed);
        if other > 0 {
            println!("readers got {other} frames other than the benchmark's messages");
        }
        let closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        if !closes.is_empty() {
            println!("READERS CLOSED by the server (code: count, 0 = no close frame): {closes:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket clients

type Ws = WebSocketStream<TcpStream>;

/// Small buffers: tens of thousands of clients live in a few processes.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// 127.0.0.2, 127.0.0.3, ...: each source address has its own ephemeral ports.
fn source_address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % SOURCE_ADDRESSES) as u8))
}

/// Connects with the token in the `Authorization` header and waits for `ready`, within
/// `CONNECT_TIMEOUT` (a server out of descriptors never answers). `recv_buffer` sets
/// SO_RCVBUF (before connecting, so the window scale matches).
async fn connect(
    server: SocketAddr,
    source: IpAddr,
    token: &str,
    recv_buffer: Option<u32>,
) -> anyhow::Result<Ws> {
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        open_and_authenticate(server, source, token, recv_buffer),
    )
    .await
    .with_context(|| format!("no `ready` within {} s", CONNECT_TIMEOUT.as_secs()))?
}

async fn open_and_authenticate(
    server: SocketAddr,
    source: IpAddr,
    token: &str,
    recv_buffer: Option<u32>,
) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding {source}"))?;
    let stream = socket.connect(server).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{server}/api/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
            .await
            .context("WebSocket handshake")?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.contains("\"ready\"") => Ok(ws),
        other => Err(anyhow!("expected `ready`, got {other:?}")),
    }
}

/// Connects one client per token, `CONNECT_CONCURRENCY` at a time; connection `i` uses
/// source address `first + i`. Each connection goes to `open` as soon as it is ready (one
/// that nobody reads for 45 s is closed by the server, and connecting many can take that
/// long). Returns what `open` made of them (in no particular order) and the errors.
async fn connect_all<T>(
    server: SocketAddr,
    tokens: &[String],
    first: usize,
    recv_buffer: Option<u32>,
    open: impl Fn(Ws) -> T,
) -> (Vec<T>, Vec<anyhow::Error>) {
    let open = &open;
    let attempts = tokens.iter().enumerate().map(|(i, token)| async move {
        let ws = connect(server, source_address(first + i), token, recv_buffer).await?;
        anyhow::Ok(open(ws))
    });
    let results: Vec<_> = futures_util::stream::iter(attempts)
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut opened = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(t) => opened.push(t),
            Err(e) => errors.push(e),
        }
    }
    (opened, errors)
}

/// Reads a connection to its end, which answers the server's pings.
async fn hold(mut ws: Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

// ---------------------------------------------------------------------------------------
// The database: users, channels, memberships and tokens

/// SQLite in the work directory, or a fresh database on the PostgreSQL server given.
struct Database {
    url: String,
    /// (server URL, database name) of a PostgreSQL database this run created.
    created: Option<(String, String)>,
}

impl Database {
    async fn create(postgres: Option<&str>, work: &Path) -> anyhow::Result<Database> {
        let Some(server) = postgres else {
            return Ok(Database {
                url: format!("sqlite://{}", work.join("chat.db").display()),
                created: None,
            });
        };
        let name = format!(
            "bench_ws_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (server, create) = (server.to_owned(), name.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut conn = diesel::PgConnection::establish(&server)?;
            diesel::sql_query(format!("CREATE DATABASE {create}")).execute(&mut conn)?;
            Ok(())
        })
        .await??;
        Ok(Database {
            url: with_database_name(postgres.unwrap_or_default(), &name),
            created: Some((postgres.unwrap_or_default().to_owned(), name)),
        })
    }

    fn backend(&self) -> &'static str {
        if self.created.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }

    async fn drop_if_created(&self) {
        let Some((server, name)) = self.created.clone() else {
            return;
        };
        let dropped = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut conn = diesel::PgConnection::establish(&server)?;
            diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)?;
            Ok(())
        })
        .await;
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop the benchmark's PostgreSQL database");
        }
    }
}

fn settings(database_url: &str, data_dir: &Path) -> anyhow::Result<Settings> {
    let data_dir = data_dir.display().to_string();
    Ok(Settings::from_lookup(|key| match key {
        "DATABASE_URL" => Some(database_url.to_owned()),
        "DATA_DIR" => Some(data_dir.clone()),
        "JWT_SECRET" => Some(JWT_SECRET.to_owned()),
        _ => None,
    })?)
}

/// Who to create.
struct Plan {
    idle_users: usize,
    shapes: Vec<Shape>,
    non_readers: usize,
    /// Servers measured (2 in an A/B run): each has channels and users of its own for every
    /// shape. Two servers on one database must not post to the same channels: each hub
    /// would see the other's event numbers as a gap and close its connections with 4009.
    sides: usize,
}

/// Tokens of the seeded users.
struct Population {
    user_count: usize,
    /// Posts every message: a member of every channel that never opens a socket.
    publisher: String,
    idle: Vec<String>,
    /// Per side (server), then per shape.
    shapes: Vec<Vec<ShapeUsers>>,
}

/// User ids and channel ids as created; turned into tokens afterwards.
struct Seeded {
    publisher: i32,
    idle: Vec<i32>,
    /// Per side, then per shape.
    shapes: Vec<Vec<SeededShape>>,
}

/// One shape's (channel ids, members, non-readers).
type SeededShape = (Vec<i32>, Vec<i32>, Vec<i32>);

async fn seed(database_url: &str, plan: &Plan) -> anyhow::Result<Population> {
    let dir = tempfile::tempdir()?;
    let settings = settings(database_url, dir.path())?;
    let tokens = TokenService::new(&settings.auth.jwt_secret, TOKEN_TTL_SECONDS);
    let target = settings.database.clone();
    let db = tokio::task::spawn_blocking(move || -> anyhow::Result<Db> {
        let db = Db::connect(&target)?;
        db.migrate()?;
        Ok(db)
    })
    .await??;
    let (idle_users, shapes, non_readers, sides) = (
        plan.idle_users,
        plan.shapes.clone(),
        plan.non_readers,
        plan.sides,
    );
    let seeded = db
        .write(move |conn| Ok(seed_rows(conn, idle_users, &shapes, non_readers, sides)?))
        .await
        .map_err(|e| anyhow!("seeding the database: {e}"))?;

    let mint = |ids: &[i32]| -> anyhow::Result<Vec<String>> {
        ids.iter()
            .map(|&id| Ok(tokens.issue(id).map_err(|e| anyhow!("{e}"))?.token))
            .collect()
    };
    let mut user_count = 1 + seeded.idle.len();
    let mut shapes = Vec::new();
    for side in &seeded.shapes {
        let mut side_shapes = Vec::new();
        for (channel_ids, members, non_readers) in side {
            user_count += members.len() + non_readers.len();
            side_shapes.push(ShapeUsers {
                channel_ids: channel_ids.clone(),
                members: mint(members)?,
                non_readers: mint(non_readers)?,
            });
        }
        shapes.push(side_shapes);
    }
    Ok(Population {
        user_count,
        publisher: mint(&[seeded.publisher])?.remove(0),
        idle: mint(&seeded.idle)?,
        shapes,
    })
}

fn seed_rows(
    conn: &mut AnyConnection,
    idle_users: usize,
    shapes: &[Shape],
    non_readers: usize,
    sides: usize,
) -> diesel::QueryResult<Seeded> {
    let publisher = users(conn, "publisher", 1)?[0];
    let idle = users(conn, "idle", idle_users)?;
    channels_of(conn, "idle", &idle, IDLE_CHANNEL_MEMBERS, publisher)?;
    let mut seeded_shapes = Vec::new();
    for side in 0..sides {
        // The first side's names are those of a run with one server.
        let p = if side == 0 {
            String::new()
        } else {
            format!("side{side}-")
        };
        let mut side_shapes = Vec::new();
        for (s, shape) in shapes.iter().enumerate() {
            let members = users(conn, &format!("{p}s{s}m"), shape.connections())?;
            let channel_ids = channels_of(
                conn,
                &format!("{p}shape{s}"),
                &members,
                shape.members,
                publisher,
            )?;
            let laggards = users(conn, &format!("{p}s{s}slow"), non_readers)?;
            for &channel_id in &channel_ids {
                for &id in &laggards {
                    chatserver::db::channels::add_member(
                        conn,
                        channel_id,
                        id,
                        chatserver::db::channels::ROLE_MEMBER,
                    )?;
                }
            }
            side_shapes.push((channel_ids, members, laggards));
        }
        seeded_shapes.push(side_shapes);
    }
    Ok(Seeded {
        publisher,
        idle,
        shapes: seeded_shapes,
    })
}

/// `count` users named `prefix0`, `prefix1`, ...; returns their ids.
fn users(conn: &mut AnyConnection, prefix: &str, count: usize) -> diesel::QueryResult<Vec<i32>> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}{i}");
            // Any string will do as a password hash: nobody logs in, tokens are minted.
            Ok(chatserver::db::users::insert(conn, &name, &name, "not-a-hash")?.id)
        })
        .collect()
}

/// Public channels of `members` users each, owned by `owner`; returns the channel ids.
fn channels_of(
    conn: &mut AnyConnection,
    prefix: &str,
    users: &[i32],
    members: usize,
    owner: i32,
) -> diesel::QueryResult<Vec<i32>> {
    use chatserver::db::channels;
    let mut channel_ids = Vec::new();
    for (c, chunk) in users.chunks(members).enumerate() {
        let (channel, _) = channels::create(conn, &format!("{prefix}-{c}"), false, owner)?;
        for &id in chunk {
            channels::add_member(conn, channel.id, id, channels::ROLE_MEMBER)?;
        }
        channel_ids.push(channel.id);
    }
    Ok(channel_ids)
}

// ---------------------------------------------------------------------------------------
// The server under test

struct Server {
    process: Spawned,
    addr: SocketAddr,
    base_url: String,
}

impl Server {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn rss(&self) -> anyhow::Result<u64> {
        proc_status_bytes(self.pid(), "VmRSS")
    }
}

impl Bench<'_> {
    /// A fresh server process on the shared database, ready to serve.
    async fn start_server(&self, label: &str) -> anyhow::Result<Server> {
        let dir = match self.side {
            Some(side) => self.work.join(format!("server-{side}-{label}")),
            None => self.work.join(format!("server-{label}")),
        };
        std::fs::create_dir_all(&dir)?;
        let port = free_ports(1)?[0];
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(&self.server_bin);
        command
            .arg("serve")
            // Not the repository: a `.env` there must not change the settings.
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("BIND_ADDR", addr.to_string())
            .env("DATABASE_URL", &self.database_url)
            .env("DATA_DIR", &dir)
            .env("JWT_SECRET", JWT_SECRET)
            .env("GC_INTERVAL_SECONDS", "0")
            .env("RUST_LOG", "warn")
            .env("WS_MAX_CONNECTIONS_PER_USER", "1000")
            .env("WORKERS", self.args.workers.to_string())
            .env("STATIC_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/static"))
            .envs(self.args.server_env.iter().map(|(k, v)| (k, v)));
        let mut process = Spawned::start("chatserver", command, &dir.join("server.log"), false)?;
        let base_url = format!("http://{addr}");
        let http = reqwest::Client::builder().no_proxy().build()?;
        wait_healthy(&http, &base_url, &mut process, Duration::from_secs(60)).await?;
        Ok(Server {
            process,
            addr,
            base_url,
        })
    }
}

// ---------------------------------------------------------------------------------------
// /proc

/// (soft, hard) RLIMIT_NOFILE of a process (`self` or a pid).
fn fd_limits(pid: &str) -> anyhow::Result<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-files limit")?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    ensure!(numbers.len() >= 2, "unexpected limits line {line:?}");
    Ok((numbers[0], numbers[1]))
}

fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Busy CPU seconds of the whole machine so far (/proc/stat: all but idle and iowait).
fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(ticks.len() >= 5, "unexpected /proc/stat line {line:?}");
    let idle = ticks[3] + ticks[4];
    Ok((ticks.iter().sum::<u64>() - idle) as f64 / 100.0)
}

struct CpuSnapshot {
    at: Instant,
    server: f64,
    bench: f64,
    machine: f64,
}

/// CPU seconds during a step: the server, this client, and every other process (other
/// work on the machine takes CPU from both).
struct CpuUse {
    wall: f64,
    server: f64,
    bench: f64,
    others: f64,
}

impl CpuSnapshot {
    fn take(pid: u32) -> anyhow::Result<CpuSnapshot> {
        Ok(CpuSnapshot {
            at: Instant::now(),
            server: cpu_seconds(&pid.to_string())?,
            bench: cpu_seconds("self")?,
            machine: machine_busy_seconds()?,
        })
    }

    fn since(&self, before: &CpuSnapshot) -> CpuUse {
        let (server, bench) = (self.server - before.server, self.bench - before.bench);
        CpuUse {
            wall: (self.at - before.at).as_secs_f64(),
            server,
            bench,
            others: (self.machine - before.machine - server - bench).max(0.0),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The binary under test

/// The highest held rates of the chat server and of the floor, shape by shape.
fn print_floor_ratios(server: &[ShapeResult], floor: &[ShapeResult], p99_limit_ms: f64) {
    let highest = |result: &ShapeResult| {
        result
            .rounds
            .iter()
            .filter(|r| r.held(p99_limit_ms))
            .map(|r| r.best_readers(p99_limit_ms).delivered_per_s)
            .fold(0.0, f64::max)
    };
    for (server, floor) in server.iter().zip(floor) {
        let (ours, least) = (highest(server), highest(floor));
        let ratio = if least > 0.0 { ours / least } else { f64::NAN };
        println!(
            "fan-out {}: highest held delivered/s: chat server {ours:.0}, floor {least:.0}: \
             ratio {ratio:.2}",
            server.shape
        );
    }
}

/// A binary in the same target directory as `server_bin` (e.g. `examples/fanout_floor`).
fn server_bin_beside(server_bin: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = server_bin
        .parent()
        .context("the server binary has no directory")?;
    Ok(dir.join(name))
}

// ---------------------------------------------------------------------------------------
// Output

/// The steps' column headings; an A/B run's rows start with the server's side.
fn print_step_header(ab: bool) {
    println!(
        "{}{:>9} {:<12} {:>7} {:>7} {:>11} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5} {:>5} {:>5}  note",
        if ab { "server    " } else { "" },
        "offered/s",
        "clients",
        "msg/s",
        "sent/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "post ms",
        "lost",
        "srv",
        "bench",
        "other"
    );
}

/// One row; the steps of a round also show the non-readers' effect and the noise.
fn print_step(step: &StepResult, p99_limit_ms: f64, side: Option<Side>) {
    let clients = match step.clients {
        Clients::Readers => "readers",
        Clients::NonReaders => "+non-readers",
    };
    let mut notes = Vec::new();
    if let Some(fate) = &step.non_readers {
        notes.push(fate.to_string());
    }
    if step.failed_posts > 0 {
        notes.push(format!(
            "{} posts failed: {}",
            step.failed_posts,
            step.first_post_error.as_deref().unwrap_or("")
        ));
    }
    if step.sent_msgs_per_s < 0.95 * step.target_msgs_per_s {
        notes.push("publisher behind".into());
    }
    if step.clients != Clients::NonReaders {
        notes.push(if step.held(p99_limit_ms) {
            "held".into()
        } else {
            "NOT held".into()
        });
    }
    println!(
        "{}{:>9} {:<12} {:>7.1} {:>7.1} {:>11.0} {:>7.2} {:>7.2} {:>7.1} {:>7.2} {:>6} {:>5.2} {:>5.2} {:>5.2}  {}",
        side.map(|s| format!("{s:<9} ")).unwrap_or_default(),
        step.offered,
        clients,
        step.target_msgs_per_s,
        step.sent_msgs_per_s,
        step.delivered_per_s,
        step.p50_ms,
        step.p99_ms,
        step.max_ms,
        step.post_p50_ms,
        step.lost(),
        step.server_cores,
        step.bench_cores,
        step.other_cores,
        notes.join("; ")
    );
}

/// Relative change from `base` to `value`.
fn change(base: f64, value: f64) -> f64 {
    if base > 0.0 {
        (value - base) / base
    } else {
        0.0
    }
}

/// A change within the spread of two identical readers-only steps tells nothing.
fn non_reader_verdict(change: f64, noise: f64) -> &'static str {
    if change.abs() < TARGET_NON_READER_CHANGE {
        "met"
    } else if change.abs() <= noise {
        "inconclusive: within the noise"
    } else {
        "MISSED"
    }
}

/// A held step (every message delivered) at an offered rate of at least the target. The
/// measured delivered/s may fall a little short of the offered rate: the step's window
/// closes with the last deliveries still in flight.
fn meets_rate_target(step: &StepResult) -> bool {
    step.offered as f64 >= TARGET_DELIVERIES_PER_S
        && step.delivered_per_s >= 0.99 * TARGET_DELIVERIES_PER_S
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn print_idle_summary(rows: &[IdleRow]) {
    for row in rows {
        let capped = match row.capped_by {
            Some(limit) => format!(
                " (asked {}, capped by the server's descriptor limit {limit})",
                row.asked
            ),
            None => String::new(),
        };
        println!(
            "idle {:>6} connections{capped}: {:.2} KiB server RSS per connection \
             (target <= {TARGET_KIB_PER_IDLE} KiB: {}); connected in {:.1} s",
            row.connections,
            row.kib_per_connection(),
            verdict(row.kib_per_connection() <= TARGET_KIB_PER_IDLE),
            row.connect_seconds
        );
    }
}

fn print_fanout_summary(results: &[ShapeResult], p99_limit_ms: f64) {
    for result in results {
        let best = highest_held(result, p99_limit_ms);
        // With no step holding, the lowest rate shows how far off it is.
        let (round, which) = match best {
            Some(round) => (
                round,
                format!("highest rate holding p99 <= {p99_limit_ms} ms"),
            ),
            None => match result.rounds.first() {
                Some(round) => (
                    round,
                    format!("NO rate held p99 <= {p99_limit_ms} ms; the lowest"),
                ),
                None => continue,
            },
        };
        let base = round.best_readers(p99_limit_ms);
        let held = best.is_some();
        let steps_held = round.held_readers(p99_limit_ms).count();
        println!(
            "fan-out {}: {which}: {:.1} msg/s = {} offered deliveries/s, {:.0} delivered/s, \
             p50 {:.2} ms, p99 {:.2} ms (target >= {TARGET_DELIVERIES_PER_S:.0}/s at p99 <= \
             {p99_limit_ms} ms: {}; held in {steps_held} of {} readers-only steps at this \
             rate, median p99 {:.2} ms); server {:.2} cores, bench {:.2}, other processes {:.2}",
            result.shape,
            base.target_msgs_per_s,
            base.offered,
            base.delivered_per_s,
            base.p50_ms,
            base.p99_ms,
            verdict(held && meets_rate_target(base)),
            round.readers.len(),
            round.readers_p99(),
            base.server_cores,
            base.bench_cores,
            base.other_cores
        );
        if let (Some(with), Some(delta), Some(noise)) = (
            round.non_readers_p99(),
            round.non_reader_change(),
            round.noise(),
        ) {
            println!(
                "  with non-readers at that rate: p99 median {:.2} ms vs {:.2} ms readers only \
                 ({:+.1}%, target < {:.0}%: {}; readers-only spread {:.1}%); {}",
                with,
                round.readers_p99(),
                delta * 100.0,
                TARGET_NON_READER_CHANGE * 100.0,
                non_reader_verdict(delta, noise),
                noise * 100.0,
                round
                    .non_readers
                    .iter()
                    .filter_map(|s| s.non_readers.as_ref().map(ToString::to_string))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
            let changes: Vec<String> = result
                .rounds
                .iter()
                .filter_map(|r| {
                    Some(format!(
                        "{}: {:+.0}% (spread {:.0}%)",
                        r.readers[0].offered,
                        r.non_reader_change()? * 100.0,
                        r.noise()? * 100.0
                    ))
                })
                .collect();
            println!(
                "  non-readers' p99 change per rate (offered/s): {}",
                changes.join(", ")
            );
        }
    }
}

/// The round at the highest rate that held, if any.
fn highest_held(result: &ShapeResult, p99_limit_ms: f64) -> Option<&Round> {
    result
        .rounds
        .iter()
        .filter(|r| r.held(p99_limit_ms))
        .max_by_key(|r| r.readers[0].offered)
}

/// `candidate / baseline`, or `-` when the baseline is zero.
fn ratio(baseline: f64, candidate: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}", candidate / baseline)
    } else {
        "-".into()
    }
}

/// An A/B run's figures side by side, with the candidate/baseline ratio.
fn print_ab_summary(
    (baseline, candidate): (&Bench, &Bench),
    (base_idle, cand_idle): (&[IdleRow], &[IdleRow]),
    (base_shapes, cand_shapes): (&[ShapeResult], &[ShapeResult]),
    p99_limit_ms: f64,
) {
    println!(
        "\n=== A/B: baseline {} vs candidate {} (ratio = candidate / baseline) ===",
        baseline.server_bin.display(),
        candidate.server_bin.display()
    );
    if !base_idle.is_empty() {
        println!(
            "{:>11} {:>12} {:>12} {:>6}   (server RSS per idle connection, KiB; connections \
             made: baseline / candidate)",
            "idle", "baseline", "candidate", "ratio"
        );
    }
    for (b, c) in base_idle.iter().zip(cand_idle) {
        let (bk, ck) = (b.kib_per_connection(), c.kib_per_connection());
        println!(
            "{:>11} {bk:>12.2} {ck:>12.2} {:>6}   ({} / {})",
            b.asked,
            ratio(bk, ck),
            b.connections,
            c.connections
        );
    }
    for (b, c) in base_shapes.iter().zip(cand_shapes) {
        println!("fan-out {}:", b.shape);
        // The highest held rate: its best readers-only step's delivered/s and p99.
        fn best(r: &ShapeResult, p99_limit_ms: f64) -> Option<&StepResult> {
            highest_held(r, p99_limit_ms).map(|round| round.best_readers(p99_limit_ms))
        }
        fn at(r: &ShapeResult, rate: u64) -> Option<&Round> {
            r.rounds
                .iter()
                .find(|round| round.readers[0].offered == rate)
        }
        let describe = |step: Option<&StepResult>| match step {
            Some(s) => format!(
                "{:.0} delivered/s at {} offered, p99 {:.2} ms",
                s.delivered_per_s, s.offered, s.p99_ms
            ),
            None => "no rate held".into(),
        };
        let (bb, cb) = (best(b, p99_limit_ms), best(c, p99_limit_ms));
        let delivered = |s: Option<&StepResult>| s.map_or(0.0, |s| s.delivered_per_s);
        println!(
            "  highest held: baseline {}; candidate {}; ratio {}",
            describe(bb),
            describe(cb),
            ratio(delivered(bb), delivered(cb))
        );
        println!(
            "  {:>9} {:>16} {:>16} {:>6}   (p99 ms: median of the readers-only steps at the \
             rate; * = the rate did not hold)",
            "offered/s", "baseline p99", "candidate p99", "ratio"
        );
        let mut rates: Vec<u64> = b
            .rounds
            .iter()
            .chain(&c.rounds)
            .map(|r| r.readers[0].offered)
            .collect();
        rates.sort_unstable();
        rates.dedup();
        for rate in rates {
            let (br, cr) = (at(b, rate), at(c, rate));
            let cell = |round: Option<&Round>| match round {
                Some(r) => format!(
                    "{:.2}{}",
                    r.readers_p99(),
                    if r.held(p99_limit_ms) { " " } else { "*" }
                ),
                None => "not run ".into(),
            };
            let p99 = |round: Option<&Round>| round.map_or(0.0, Round::readers_p99);
            println!(
                "  {rate:>9} {:>16} {:>16} {:>6}",
                cell(br),
                cell(cr),
                match (br, cr) {
                    (Some(_), Some(_)) => ratio(p99(br), p99(cr)),
                    _ => "-".into(),
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for v in [0, 1, 63, 64, 65, 127, 128, 129, 1000, 50_000, 1 << 30] {
            let i = Histogram::bucket(v);
            assert!(Histogram::upper_bound(i) >= v, "{v}");
            assert!(i == 0 || Histogram::upper_bound(i - 1) < v, "{v}");
        }
    }

    #[test]
    fn stamps_are_found_in_event_frames() {
        let frame =
            r#"{"channel_id":3,"data":{"content":"b7.123456","id":1},"type":"message_created"}"#;
        assert_eq!(parse_stamp(frame), Some((7, 123_456)));
        assert_eq!(parse_stamp(r#"{"type":"pong"}"#), None);
        assert_eq!(
            with_database_name("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database_name("postgres://h", "x"), "postgres://h/x");
    }
}
