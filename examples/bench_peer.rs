//! The chat server against the peer users would pick instead for WebSocket fan-out: a
//! minimal Node.js relay on npm `ws` (`bench/node-relay/relay.js`, rooms in memory, nothing
//! persisted).
//!
//! Both servers run at once, each pinned to core 0 (`taskset -c 0`), the chat server with
//! `WORKERS=1` on embedded SQLite in a temporary directory. This client re-executes itself
//! under `taskset -c 1`, so the servers and the client never take CPU from each other.
//!
//! Every room has `--members` members, each holding one WebSocket to each server. Chat server
//! users are registered through the API (`POST /api/auth/register`), and rooms are channels
//! created and joined over REST; a socket authenticates with its first frame. Relay sockets
//! join their room with a `join` frame. Messages are published over the sockets with the
//! chat server's `message` frame, round-robin over rooms and over each room's members (a
//! chat server socket may send at most 1200 frames a minute), open loop at a fixed offered
//! rate in deliveries per second (messages/s = deliveries / members). Each message's content
//! carries the time it was due; each member measures the latency from then to the moment it
//! read the event (the sender's own copy included, as both servers echo it).
//!
//! For each rate the relay step and the chat server step run back to back (the order
//! alternating between rounds), one publishing at a time, so both see the same machine. Per
//! step: offered and achieved deliveries/s, lost deliveries, p50/p99 latency, the server's
//! CPU seconds (/proc/PID/stat, all threads) and CPU microseconds per delivery. At the end
//! the chat server's messages are counted through the REST listing, against what was
//! published.
//!
//! ```sh
//! scripts/bench-peer.sh                       # defaults: 100 rooms x 20 members
//! scripts/bench-peer.sh --rooms 10 --deliveries 2000,5000 --step-seconds 5   # quick
//! ```

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use common::{
    Histogram, Spawned, cpu_count, cpu_seconds, free_ports, load_average, median, mib, now_us,
    parse_stamp, server_frame, stamp, work_dir,
};

/// Set in the environment of the copy of this process that runs under `taskset`.
const PINNED_ENV: &str = "BENCH_PEER_PINNED";
const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";
const PASSWORD: &str = "bench-peer-password";
/// WebSocket handshakes in flight at once.
const CONNECT_CONCURRENCY: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Channel creations and joins in flight at once (cheap, unlike registrations).
const REST_CONCURRENCY: usize = 16;
/// The chat server's per-socket frame budget (src/realtime/session.rs).
const FRAMES_PER_MINUTE_PER_SOCKET: f64 = 1200.0;
/// A step ends once every delivery arrived, or when nothing arrived for this long...
const DRAIN_QUIET: Duration = Duration::from_secs(3);
/// ...or at the latest this long after publishing ended.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// A pause between steps: what one server does after its step (a WAL checkpoint, freeing
/// buffers) should not land in the other's.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(about = "WebSocket fan-out: the chat server against a minimal Node.js ws relay")]
struct Args {
    /// Rooms (channels).
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Members per room; each holds one WebSocket to each server.
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// Offered deliveries per second, one step each (messages/s = this / members).
    #[arg(long, value_delimiter = ',', default_values_t = vec![5_000u64, 20_000, 50_000])]
    deliveries: Vec<u64>,
    /// Publishing time per step, in seconds.
    #[arg(long, default_value_t = 10.0)]
    step_seconds: f64,
    /// Untimed publishing at the lowest rate before the first step, per server.
    #[arg(long, default_value_t = 3.0)]
    warmup_seconds: f64,
    /// Rounds over every rate; the summary gives each figure's median over them.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Registrations in flight at once (each costs the server an Argon2 hash).
    #[arg(long, default_value_t = 4)]
    register_concurrency: usize,
    /// The chat server binary (default: `chatserver` in this example's profile directory).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The Node.js executable.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The relay script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/node-relay/relay.js"))]
    relay_script: PathBuf,
    /// Do not pin the servers to core 0 and this client to core 1.
    #[arg(long)]
    no_pin: bool,
    /// Parent of the temporary directory holding the database and the logs.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Keep the temporary directory and print its path.
    #[arg(long)]
    keep: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.no_pin {
        pin_client()?;
    }
    // One thread: the client has one core to itself, and no cross-thread hand-offs.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// Re-executes this process under `taskset -c 1` (once: the copy finds `PINNED_ENV` set).
fn pin_client() -> anyhow::Result<()> {
    if std::env::var_os(PINNED_ENV).is_some() {
        return Ok(());
    }
    let allowed = allowed_cpus()?;
    ensure!(
        allowed.contains(&0) && allowed.contains(&1),
        "pinning needs cores 0 and 1 and this process may use {allowed:?}: pass --no-pin"
    );
    let error = Command::new("taskset")
        .args(["-c", CLIENT_CORE])
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(PINNED_ENV, "1")
        .exec();
    Err(error).context("re-executing under `taskset -c 1` (or pass --no-pin)")
}

/// The cores this process may run on (`Cpus_allowed_list` of /proc/self/status).
fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .context("no Cpus_allowed_list in /proc/self/status")?;
    cpu_list(list)
}

/// A kernel CPU list such as `0-3,6`.
fn cpu_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(first.parse::<usize>()?..=last.parse::<usize>()?);
    }
    Ok(cpus)
}

/// The machine's online cores (this process, once pinned, sees only one).
fn online_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| cpu_list(&list).ok())
        .map_or_else(|| cpu_count().to_string(), |cpus| cpus.len().to_string())
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.rooms > 0 && args.members > 0,
        "rooms and members must be positive"
    );
    ensure!(args.rounds > 0, "--rounds must be positive");
    ensure!(
        !args.deliveries.is_empty() && args.deliveries.iter().all(|&d| d > 0),
        "--deliveries needs positive rates"
    );
    let connections = args.rooms * args.members;
    let open_files = open_files_limit()?;
    let needed = 2 * connections as u64 + 256;
    ensure!(
        open_files >= needed,
        "{connections} connections per server need about {needed} descriptors here and the \
         limit is {open_files}: raise it (`ulimit -n`, or run scripts/bench-peer.sh)"
    );
    // The chat server refuses frames beyond its per-socket budget: stay well under it.
    let top_rate = *args.deliveries.iter().max().unwrap_or(&0) as f64;
    let per_socket_per_minute = top_rate / args.members as f64 / connections as f64 * 60.0;
    ensure!(
        per_socket_per_minute <= 0.8 * FRAMES_PER_MINUTE_PER_SOCKET,
        "the top rate makes each socket send {per_socket_per_minute:.0} frames a minute; the \
         chat server allows {FRAMES_PER_MINUTE_PER_SOCKET}: use more rooms or members"
    );

    let server_bin = common::server_bin_to_measure(args.server_bin.as_deref())?;
    let work = work_dir(args.tmp_dir.as_deref())?;
    let pin = (!args.no_pin).then_some(SERVER_CORE);
    println!(
        "machine: {} CPUs, load average {}; client pinned to {}; servers pinned to {}",
        online_cpus(),
        load_average(),
        allowed_cpus().map_or_else(|_| "?".into(), |cpus| format!("cores {cpus:?}")),
        pin.map_or("nothing (--no-pin)".into(), |c| format!("core {c}"))
    );
    println!(
        "chat server: {} (WORKERS=1, SQLite in {}); relay: {} {} (ws {})",
        server_bin.display(),
        work.path().display(),
        program_version(&args.node),
        args.relay_script.display(),
        ws_version(&args.relay_script)
    );

    let mut chat = start_chat_server(&server_bin, work.path(), pin).await?;
    let mut relay = start_relay(&args, work.path(), pin).await?;
    let steps = 1 + args.deliveries.len() * args.rounds;
    let http = reqwest::Client::builder().no_proxy().build()?;

    // Chat server users, registered through the API: one Argon2 hash each.
    let names: Vec<String> = (0..args.rooms)
        .flat_map(|r| (0..args.members).map(move |m| format!("peer-r{r}-m{m}")))
        .collect();
    let started = Instant::now();
    let tokens = register_all(&http, &chat.base_url, &names, args.register_concurrency).await?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "registered {} users through POST /api/auth/register in {took:.1} s ({:.1} ms each, \
         {} in flight, an Argon2 hash each on the server)",
        names.len(),
        took * 1000.0 / names.len() as f64,
        args.register_concurrency
    );
    let started = Instant::now();
    let channel_ids = make_rooms(&http, &chat.base_url, &tokens, args.members).await?;
    println!(
        "created {} channels and joined their members over REST in {:.1} s",
        channel_ids.len(),
        started.elapsed().as_secs_f64()
    );

    // Sockets: member m of room r is connection r * members + m on both servers.
    let started = Instant::now();
    let chat_stats = Arc::new(Stats::new(steps));
    let chat_socks = connect_all(connections, chat_stats.clone(), |i| {
        connect_chat(chat.addr, tokens[i].clone(), channel_ids[i / args.members])
    })
    .await
    .with_context(|| format!("chat server log: {}", chat.process.log.display()))?;
    let relay_stats = Arc::new(Stats::new(steps));
    // The relay's rooms are numbered like the chat server's channels.
    let relay_socks = connect_all(connections, relay_stats.clone(), |i| {
        connect_relay(relay.addr, names[i].clone(), channel_ids[i / args.members])
    })
    .await
    .with_context(|| format!("relay log: {}", relay.process.log.display()))?;
    println!(
        "{connections} sockets ready on each server in {:.1} s; server VmRSS: chat server \
         {:.1} MiB, relay {:.1} MiB",
        started.elapsed().as_secs_f64(),
        mib(common::proc_status_bytes(chat.process.pid(), "VmRSS")?),
        mib(common::proc_status_bytes(relay.process.pid(), "VmRSS")?)
    );
    let mut targets = [
        Target::new(
            Kind::Relay,
            &channel_ids,
            args.members,
            relay_socks,
            relay_stats,
        ),
        Target::new(
            Kind::Chat,
            &channel_ids,
            args.members,
            chat_socks,
            chat_stats,
        ),
    ];
    let duration = Duration::from_secs_f64(args.step_seconds);

    // Step 0 of each server: warm-up at the lowest rate, not reported.
    let lowest = *args.deliveries.iter().min().unwrap_or(&1);
    for target in &mut targets {
        let warm_up = Duration::from_secs_f64(args.warmup_seconds);
        let published = target
            .publish(0, lowest as f64 / args.members as f64, warm_up)
            .await;
        wait_for_deliveries(&target.stats.steps[0], published.sent * args.members as u64).await;
    }

    println!(
        "\npublishing over the sockets; {} s per step; latency = read time - due time; CPU = \
         the publishing server's utime + stime during the step, drain included",
        args.step_seconds
    );
    print_step_header();
    let mut results: Vec<StepResult> = Vec::new();
    let mut index = 1;
    for &offered in &args.deliveries {
        for round in 0..args.rounds {
            // Alternate which server goes first, so neither always follows the other.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for t in order {
                tokio::time::sleep(SETTLE).await;
                let process = match targets[t].kind {
                    Kind::Chat => &mut chat.process,
                    Kind::Relay => &mut relay.process,
                };
                process.check_running()?;
                let result = targets[t]
                    .step(index, offered, round, duration, process.pid())
                    .await?;
                print_step(&result);
                results.push(result);
            }
            // Each server has its own readings: both use the same step number.
            index += 1;
        }
    }
    for target in &targets {
        target.stats.print_anomalies(target.kind);
    }

    // Every message the chat server took must be in its database.
    let chat_target = &targets[1];
    let counts =
        count_persisted(&http, &chat.base_url, &tokens, &channel_ids, args.members).await?;
    let persisted: u64 = counts.iter().sum();
    let published: u64 = chat_target.published_per_room.iter().sum();
    let differing = counts
        .iter()
        .zip(&chat_target.published_per_room)
        .filter(|(a, b)| a != b)
        .count();
    let refused = chat_target.stats.errors.load(Ordering::Relaxed);
    println!(
        "\nchat server persistence: {persisted} messages listed through GET \
         /api/channels/{{id}}/messages against {published} published over the sockets \
         (warm-up included); {refused} refused with an error frame; {differing} channels \
         differ: {}",
        if persisted == published && differing == 0 {
            "every published message was persisted"
        } else {
            "MISMATCH"
        }
    );
    println!(
        "relay persistence: none; it keeps nothing ({} messages relayed from memory only)",
        targets[0].published_per_room.iter().sum::<u64>()
    );

    print_summary(&args, &results, &targets);
    for target in &targets {
        for sock in &target.socks {
            sock.task.abort();
        }
    }
    if args.keep {
        println!("kept {}", work.keep().display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The servers

struct Server {
    process: Spawned,
    addr: SocketAddr,
    base_url: String,
}

/// `program` with `taskset -c CORE` in front when pinning.
fn pinned(program: &Path, core: Option<&str>) -> Command {
    match core {
        Some(core) => {
            let mut command = Command::new("taskset");
            command.args(["-c", core]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A fresh environment: only what the server needs (a `.env` or stray variable of this
/// shell must not change the settings).
fn clean_env(command: &mut Command, dir: &Path) {
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
}

async fn start_chat_server(bin: &Path, work: &Path, pin: Option<&str>) -> anyhow::Result<Server> {
    let dir = work.join("chatserver");
    std::fs::create_dir_all(&dir)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_ports(1)?[0]));
    // A fresh secret: 64 random hex digits.
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut command = pinned(bin, pin);
    command.arg("serve");
    clean_env(&mut command, &dir);
    command
        .env("BIND_ADDR", addr.to_string())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("chat.db").display()),
        )
        .env("DATA_DIR", &dir)
        .env("JWT_SECRET", secret)
        .env("WORKERS", "1")
        .env("GC_INTERVAL_SECONDS", "0")
        // Every benchmark user registers from 127.0.0.1.
        .env("REGISTRATIONS_PER_MINUTE_PER_ADDRESS", "100000")
        .env("RUST_LOG", "warn")
        .env("STATIC_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/static"));
    let process = Spawned::start("chatserver", command, &dir.join("server.log"), false)?;
    Server::ready(process, addr).await
}

async fn start_relay(args: &Args, work: &Path, pin: Option<&str>) -> anyhow::Result<Server> {
    ensure!(
        args.relay_script.is_file(),
        "{} is missing",
        args.relay_script.display()
    );
    let dir = work.join("relay");
    std::fs::create_dir_all(&dir)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_ports(1)?[0]));
    let mut command = pinned(&args.node, pin);
    command.arg(&args.relay_script);
    clean_env(&mut command, &dir);
    command
        .env("PORT", addr.port().to_string())
        .env("HOST", "127.0.0.1")
        .env("NODE_ENV", "production");
    let process = Spawned::start("node relay", command, &dir.join("relay.log"), false)?;
    Server::ready(process, addr).await
}

impl Server {
    /// Waits for `/healthz` (both servers answer it).
    async fn ready(mut process: Spawned, addr: SocketAddr) -> anyhow::Result<Server> {
        let base_url = format!("http://{addr}");
        let http = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            process.check_running()?;
            if let Ok(response) = http.get(format!("{base_url}/healthz")).send().await
                && response.status().is_success()
            {
                return Ok(Server {
                    process,
                    addr,
                    base_url,
                });
            }
            ensure!(
                Instant::now() < deadline,
                "no answer on {base_url}/healthz within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `PROGRAM --version`, for the output.
fn program_version(program: &Path) -> String {
    let version = Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{} {version}", program.display())
}

/// The `ws` version installed next to the relay script.
fn ws_version(script: &Path) -> String {
    let manifest = script
        .parent()
        .unwrap_or(Path::new("."))
        .join("node_modules/ws/package.json");
    std::fs::read_to_string(manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "not installed: run `npm ci` in bench/node-relay".into())
}

fn open_files_limit() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-files limit in /proc/self/limits")?;
    line.split_whitespace()
        .find_map(|w| w.parse().ok())
        .context("unexpected open-files line")
}

// ---------------------------------------------------------------------------------------
// Users and rooms, through the chat server's REST API

/// Registers every name; returns their tokens in the same order.
async fn register_all(
    http: &reqwest::Client,
    base_url: &str,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let requests = names.iter().map(|name| async move {
        let body = json!({ "username": name, "password": PASSWORD });
        let answer = call(
            http.post(format!("{base_url}/api/auth/register"))
                .json(&body),
        )
        .await
        .with_context(|| format!("registering {name}"))?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the registration answer")
    });
    futures_util::stream::iter(requests)
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Member 0 of each room creates its channel; the others join it. Returns the channel ids.
async fn make_rooms(
    http: &reqwest::Client,
    base_url: &str,
    tokens: &[String],
    members: usize,
) -> anyhow::Result<Vec<i32>> {
    let creates = tokens
        .chunks(members)
        .enumerate()
        .map(|(r, room)| async move {
            let body = json!({ "name": format!("room-{r}") });
            let channel = call(
                http.post(format!("{base_url}/api/channels"))
                    .bearer_auth(&room[0])
                    .json(&body),
            )
            .await?;
            channel["id"]
                .as_i64()
                .and_then(|id| i32::try_from(id).ok())
                .context("no id in the channel")
        });
    let channel_ids: Vec<i32> = futures_util::stream::iter(creates)
        .buffered(REST_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let joins = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| i % members != 0)
        .map(|(i, token)| {
            let url = format!("{base_url}/api/channels/{}/join", channel_ids[i / members]);
            async move { call(http.post(url).bearer_auth(token)).await }
        });
    let joined: Vec<_> = futures_util::stream::iter(joins)
        .buffer_unordered(REST_CONCURRENCY)
        .collect()
        .await;
    joined.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(channel_ids)
}

/// Each channel's messages, counted by paging `?after=` as one of its members.
async fn count_persisted(
    http: &reqwest::Client,
    base_url: &str,
    tokens: &[String],
    channel_ids: &[i32],
    members: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(channel_ids.len());
    for (r, &channel) in channel_ids.iter().enumerate() {
        let token = &tokens[r * members];
        let (mut count, mut after) = (0, 0);
        loop {
            let page = call(
                http.get(format!(
                    "{base_url}/api/channels/{channel}/messages?after={after}&limit=100"
                ))
                .bearer_auth(token),
            )
            .await?;
            let messages = page["messages"].as_array().context("no messages")?;
            count += messages.len() as u64;
            if let Some(last) = messages.last().and_then(|m| m["id"].as_i64()) {
                after = last;
            }
            if page["has_more"] != Value::Bool(true) {
                break;
            }
        }
        counts.push(count);
    }
    Ok(counts)
}

/// Sends a request; a 2xx answer's JSON body, or an error with the status and body.
async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    ensure!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(serde_json::from_slice(&body)?)
}

// ---------------------------------------------------------------------------------------
// Sockets

type Ws = WebSocketStream<TcpStream>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Relay,
    Chat,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Relay => "node ws relay",
            Kind::Chat => "chat server",
        }
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

async fn open(url: String, addr: SocketAddr) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

/// The next text frame.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    match ws.next().await {
        Some(Ok(Message::Text(text))) => Ok(text.to_string()),
        other => Err(anyhow!("expected a text frame, got {other:?}")),
    }
}

/// A chat server socket: the token in the first frame, then `ready` naming the room.
async fn connect_chat(addr: SocketAddr, token: String, channel_id: i32) -> anyhow::Result<Ws> {
    let mut ws = open(format!("ws://{addr}/api/ws"), addr).await?;
    let auth = json!({ "type": "auth", "token": token }).to_string();
    ws.send(Message::text(auth)).await?;
    let ready: Value = serde_json::from_str(&next_text(&mut ws).await?)?;
    ensure!(ready["type"] == "ready", "expected `ready`, got {ready}");
    let follows = ready["channel_ids"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|id| id.as_i64() == Some(channel_id.into())));
    ensure!(
        follows,
        "`ready` does not name channel {channel_id}: {ready}"
    );
    Ok(ws)
}

/// A relay socket: a `join` frame, answered by `joined`.
async fn connect_relay(addr: SocketAddr, user: String, room: i32) -> anyhow::Result<Ws> {
    let mut ws = open(format!("ws://{addr}/?user={user}"), addr).await?;
    let join = json!({ "type": "join", "channel_id": room }).to_string();
    ws.send(Message::text(join)).await?;
    let joined = next_text(&mut ws).await?;
    ensure!(
        joined.contains("\"joined\""),
        "expected `joined`, got {joined}"
    );
    Ok(ws)
}

/// A connected socket: frames to publish go in `outbox`; `task` reads and writes.
struct Sock {
    outbox: mpsc::UnboundedSender<String>,
    task: JoinHandle<()>,
}

/// Opens `count` sockets with `connect(i)`, `CONNECT_CONCURRENCY` at a time, in order, and
/// hands each to a task that records what it reads in `stats`.
async fn connect_all<F, Fut>(
    count: usize,
    stats: Arc<Stats>,
    connect: F,
) -> anyhow::Result<Vec<Sock>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Ws>>,
{
    let attempts = (0..count).map(|i| {
        let connecting = connect(i);
        let stats = stats.clone();
        async move {
            let ws = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .context("no answer within 60 s")??;
            let (outbox, outgoing) = mpsc::unbounded_channel();
            let task = tokio::spawn(drive(ws, outgoing, stats));
            anyhow::Ok(Sock { outbox, task })
        }
    });
    futures_util::stream::iter(attempts)
        .buffered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A socket's life after the handshake: reads frames and records the events, answers
/// pings, and writes what the publisher queues.
///
/// It works on the TCP stream itself, not through tungstenite: the client has one core for
/// thousands of sockets, and parsing only the frame header leaves it well ahead of the
/// servers. Nothing is left in tungstenite's buffer: neither server sends anything after
/// `ready` / `joined` until the first message.
async fn drive(mut ws: Ws, mut outgoing: mpsc::UnboundedReceiver<String>, stats: Arc<Stats>) {
    let socket = ws.get_mut();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(256);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(4096);
        }
        tokio::select! {
            read = socket.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                let mut at = 0;
                while let Some((opcode, payload, len)) = server_frame(&buf[at..]) {
                    match opcode {
                        0x1 => stats.record_frame(payload),
                        0x8 => {
                            let code = (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            stats.record_close(code);
                            return;
                        }
                        0x9 => {
                            client_frame(0xA, payload, &mut out);
                            if socket.write_all(&out).await.is_err() {
                                stats.record_close(None);
                                return;
                            }
                        }
                        _ => {}
                    }
                    at += len;
                }
                buf.drain(..at);
            }
            Some(text) = outgoing.recv() => {
                client_frame(0x1, text.as_bytes(), &mut out);
                if socket.write_all(&out).await.is_err() {
                    break;
                }
            }
        }
    }
    stats.record_close(None);
}

/// A client frame into `out`. Clients must mask; the key is zero, which leaves the payload
/// as it is (both servers still unmask it).
fn client_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}

// ---------------------------------------------------------------------------------------
// Publishing and steps

/// One server as the benchmark drives it.
struct Target {
    kind: Kind,
    room_ids: Vec<i32>,
    members: usize,
    /// Member m of room r is `socks[r * members + m]`.
    socks: Vec<Sock>,
    stats: Arc<Stats>,
    /// Messages handed to the sockets, per room, warm-up included.
    published_per_room: Vec<u64>,
}

struct Published {
    sent: u64,
    /// Messages whose socket was gone.
    failed: u64,
    start_us: u64,
    sent_per_s: f64,
}

struct StepResult {
    kind: Kind,
    offered: u64,
    round: usize,
    target_msgs_per_s: f64,
    sent_msgs_per_s: f64,
    failed: u64,
    expected: u64,
    received: u64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu_s: f64,
    client_cores: f64,
}

impl StepResult {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    fn cpu_us_per_delivery(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.received.max(1) as f64
    }
}

impl Target {
    fn new(
        kind: Kind,
        room_ids: &[i32],
        members: usize,
        socks: Vec<Sock>,
        stats: Arc<Stats>,
    ) -> Target {
        Target {
            kind,
            room_ids: room_ids.to_vec(),
            members,
            socks,
            stats,
            published_per_room: vec![0; room_ids.len()],
        }
    }

    /// Publishes at `per_second` messages for `duration`, open loop: message i is due at
    /// i / rate and is stamped with that time, so a client or server that falls behind shows
    /// up as latency. Message i goes to room i % rooms, from its members in turn.
    async fn publish(&mut self, step: usize, per_second: f64, duration: Duration) -> Published {
        let count = (per_second * duration.as_secs_f64()).round().max(1.0) as u64;
        let interval_us = 1e6 / per_second;
        let rooms = self.room_ids.len() as u64;
        let start = Instant::now();
        let start_us = now_us();
        let (mut sent, mut failed) = (0, 0);
        let mut i = 0;
        while i < count {
            // Everything due by now, then sleep until the next one is due.
            let elapsed_us = start.elapsed().as_micros() as f64;
            while i < count && i as f64 * interval_us <= elapsed_us {
                let due_us = (i as f64 * interval_us) as u64;
                let room = (i % rooms) as usize;
                let member = (i / rooms) as usize % self.members;
                // A client_id is an idempotency key: unique per message across steps, or a
                // repeat would be refused (other content) instead of posted.
                let frame = format!(
                    r#"{{"type":"message","channel_id":{},"content":"{}","client_id":"c{start_us}-{i}"}}"#,
                    self.room_ids[room],
                    stamp(step, start_us + due_us)
                );
                match self.socks[room * self.members + member].outbox.send(frame) {
                    Ok(()) => {
                        sent += 1;
                        self.published_per_room[room] += 1;
                    }
                    Err(_) => failed += 1,
                }
                i += 1;
            }
            if i < count {
                let next = start + Duration::from_micros((i as f64 * interval_us) as u64);
                tokio::time::sleep_until(next.into()).await;
            }
        }
        let sending = start.elapsed().as_secs_f64();
        Published {
            sent,
            failed,
            start_us,
            // The first message went out at 0, the last at `sending`: count - 1 intervals.
            sent_per_s: if count > 1 {
                (count - 1) as f64 / sending.max(1e-6)
            } else {
                per_second
            },
        }
    }

    async fn step(
        &mut self,
        index: usize,
        offered: u64,
        round: usize,
        duration: Duration,
        pid: u32,
    ) -> anyhow::Result<StepResult> {
        let target = offered as f64 / self.members as f64;
        let pid = pid.to_string();
        let (server_before, client_before) = (cpu_seconds(&pid)?, cpu_seconds("self")?);
        let wall = Instant::now();
        let published = self.publish(index, target, duration).await;
        let stats = &self.stats.steps[index];
        let expected = published.sent * self.members as u64;
        wait_for_deliveries(stats, expected).await;
        let server_cpu_s = cpu_seconds(&pid)? - server_before;
        let client_cpu_s = cpu_seconds("self")? - client_before;
        let wall = wall.elapsed().as_secs_f64();
        let received = stats.received.load(Ordering::Relaxed);
        // From the first message's due time to the last delivery, and at least the step.
        let window_us = stats
            .last_us
            .load(Ordering::Relaxed)
            .saturating_sub(published.start_us)
            .max(duration.as_micros() as u64);
        Ok(StepResult {
            kind: self.kind,
            offered,
            round,
            target_msgs_per_s: target,
            sent_msgs_per_s: published.sent_per_s,
            failed: published.failed,
            expected,
            received,
            delivered_per_s: received as f64 * 1e6 / window_us as f64,
            p50_ms: stats.latency.percentile(0.50) as f64 / 1000.0,
            p99_ms: stats.latency.percentile(0.99) as f64 / 1000.0,
            max_ms: stats.latency.percentile(1.0) as f64 / 1000.0,
            server_cpu_s,
            client_cores: client_cpu_s / wall,
        })
    }
}

/// Waits until `expected` deliveries arrived, or nothing arrived for `DRAIN_QUIET`.
async fn wait_for_deliveries(step: &StepStats, expected: u64) {
    let started = Instant::now();
    let (mut last_count, mut last_progress) = (0, Instant::now());
    loop {
        let received = step.received.load(Ordering::Relaxed);
        if received >= expected || started.elapsed() > DRAIN_MAX {
            return;
        }
        if received != last_count {
            (last_count, last_progress) = (received, Instant::now());
        } else if last_progress.elapsed() > DRAIN_QUIET {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// What the sockets read

/// One server's readings, shared by its socket tasks.
struct Stats {
    steps: Vec<StepStats>,
    /// `error` frames (a refused message), and the first one.
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Frames that are neither a benchmark event nor an error.
    other_frames: AtomicU64,
    /// Close codes the sockets got (0: the socket ended without one); there should be none.
    closes: Mutex<BTreeMap<u16, u64>>,
}

struct StepStats {
    latency: Histogram,
    received: AtomicU64,
    /// Bytes of the event frames' payloads, for their mean size.
    bytes: AtomicU64,
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
                    bytes: AtomicU64::new(0),
                    last_us: AtomicU64::new(0),
                })
                .collect(),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            other_frames: AtomicU64::new(0),
            closes: Mutex::default(),
        }
    }

    fn record_frame(&self, payload: &[u8]) {
        let now = now_us();
        let text = std::str::from_utf8(payload).unwrap_or("");
        match parse_stamp(text).and_then(|(i, due)| Some((self.steps.get(i)?, due))) {
            Some((step, due)) => {
                step.latency.record(now.saturating_sub(due));
                step.received.fetch_add(1, Ordering::Relaxed);
                step.bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                step.last_us.fetch_max(now, Ordering::Relaxed);
            }
            None if text.contains("\"type\":\"error\"") => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| text.to_owned());
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

    /// The mean size of an event frame's payload over every step.
    fn mean_event_bytes(&self) -> f64 {
        let bytes: u64 = self
            .steps
            .iter()
            .map(|s| s.bytes.load(Ordering::Relaxed))
            .sum();
        let count: u64 = self
            .steps
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .sum();
        bytes as f64 / count.max(1) as f64
    }

    fn print_anomalies(&self, kind: Kind) {
        let name = kind.name();
        let errors = self.errors.load(Ordering::Relaxed);
        if errors > 0 {
            let first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            println!("{name}: {errors} error frames, the first: {first:?}");
        }
        let other = self.other_frames.load(Ordering::Relaxed);
        if other > 0 {
            println!("{name}: {other} frames other than the benchmark's events");
        }
        let closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        if !closes.is_empty() {
            println!("{name}: SOCKETS CLOSED (code: count, 0 = no close frame): {closes:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output

fn print_step_header() {
    println!(
        "{:>9} {:>5} {:<13} {:>7} {:>7} {:>11} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}",
        "offered/s",
        "round",
        "server",
        "msg/s",
        "sent/s",
        "delivered/s",
        "lost",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU s",
        "µs/deliv",
        "client"
    );
}

fn print_step(step: &StepResult) {
    println!(
        "{:>9} {:>5} {:<13} {:>7.1} {:>7.1} {:>11.0} {:>7} {:>7.2} {:>7.2} {:>7.1} {:>7.2} {:>8.2} {:>6.2}{}",
        step.offered,
        step.round + 1,
        step.kind.name(),
        step.target_msgs_per_s,
        step.sent_msgs_per_s,
        step.delivered_per_s,
        step.lost(),
        step.p50_ms,
        step.p99_ms,
        step.max_ms,
        step.server_cpu_s,
        step.cpu_us_per_delivery(),
        step.client_cores,
        if step.failed > 0 {
            format!("  {} messages not sent: socket gone", step.failed)
        } else if step.sent_msgs_per_s < 0.95 * step.target_msgs_per_s {
            "  publisher behind".into()
        } else {
            String::new()
        }
    );
}

/// Medians over the rounds of one server at one rate.
struct Row {
    sent_msgs_per_s: f64,
    delivered_per_s: f64,
    lost: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s: f64,
    cpu_us: f64,
}

fn row(results: &[StepResult], kind: Kind, offered: u64) -> Row {
    let steps: Vec<&StepResult> = results
        .iter()
        .filter(|r| r.kind == kind && r.offered == offered)
        .collect();
    let m = |f: fn(&StepResult) -> f64| median(steps.iter().map(|s| f(s)));
    Row {
        sent_msgs_per_s: m(|s| s.sent_msgs_per_s),
        delivered_per_s: m(|s| s.delivered_per_s),
        lost: m(|s| s.lost() as f64),
        p50_ms: m(|s| s.p50_ms),
        p99_ms: m(|s| s.p99_ms),
        cpu_s: m(|s| s.server_cpu_s),
        cpu_us: m(StepResult::cpu_us_per_delivery),
    }
}

fn print_summary(args: &Args, results: &[StepResult], targets: &[Target]) {
    let of = if args.rounds > 1 {
        format!(" (medians of {} rounds)", args.rounds)
    } else {
        String::new()
    };
    println!(
        "\n## {} rooms x {} members = {} sockets per server, {} s per step{of}\n",
        args.rooms,
        args.members,
        args.rooms * args.members,
        args.step_seconds
    );
    println!(
        "| offered deliveries/s | server | msg/s sent | achieved deliveries/s | lost | p50 ms \
         | p99 ms | server CPU s | CPU µs/delivery |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &offered in &args.deliveries {
        for kind in [Kind::Relay, Kind::Chat] {
            let r = row(results, kind, offered);
            println!(
                "| {offered} | {} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                kind.name(),
                r.sent_msgs_per_s,
                r.delivered_per_s,
                r.lost,
                r.p50_ms,
                r.p99_ms,
                r.cpu_s,
                r.cpu_us
            );
        }
    }
    println!(
        "\n| offered deliveries/s | CPU per delivery, chat server / relay | p99, chat server / relay |"
    );
    println!("|---:|---:|---:|");
    for &offered in &args.deliveries {
        let (node, chat) = (
            row(results, Kind::Relay, offered),
            row(results, Kind::Chat, offered),
        );
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!(
            "| {offered} | {:.2} | {:.2} |",
            ratio(chat.cpu_us, node.cpu_us),
            ratio(chat.p99_ms, node.p99_ms)
        );
    }
    let bytes = |kind: Kind| {
        targets
            .iter()
            .find(|t| t.kind == kind)
            .map_or(0.0, |t| t.stats.mean_event_bytes())
    };
    println!(
        "\nEvent frames: {:.0} bytes (chat server) vs {:.0} (relay). The chat server \
         authenticates every socket, checks membership, and persists every message to SQLite \
         before fanning it out; the relay keeps nothing. Both servers were pinned to one core, \
         this client to another; load average at the end {} (other work on the machine adds \
         noise to latency more than to CPU per delivery).",
        bytes(Kind::Chat),
        bytes(Kind::Relay),
        load_average()
    );
    let deliveries: Vec<String> = args.deliveries.iter().map(u64::to_string).collect();
    println!(
        "Reproduce: scripts/bench-peer.sh --rooms {} --members {} --deliveries {} \
         --step-seconds {} --rounds {}",
        args.rooms,
        args.members,
        deliveries.join(","),
        args.step_seconds,
        args.rounds
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_stamps_are_found() {
        let mut out = Vec::new();
        client_frame(0x1, b"hello", &mut out);
        assert_eq!(out[..2], [0x81, 0x85]);
        let server = [&[0x81u8, 5][..], b"hello"].concat();
        assert_eq!(server_frame(&server), Some((0x1, &b"hello"[..], 7)));
        assert_eq!(server_frame(&server[..4]), None);
        let relay = r#"{"type":"message_created","channel_id":3,"data":{"id":1,"content":"b7.123456","client_id":"c1"}}"#;
        assert_eq!(parse_stamp(relay), Some((7, 123_456)));
    }
}
