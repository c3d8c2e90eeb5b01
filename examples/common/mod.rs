//! What the benchmarks share: child processes, free ports,
//! readings from /proc, the binary under test, and small helpers for the output.

// Each benchmark uses only part of this module; the rest would be dead code in it.
#![allow(dead_code)]

use std::fs::File;
use std::io::BufReader;
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use tempfile::TempDir;

pub mod s3;

// ---------------------------------------------------------------------------------------
// Processes

/// A child process, killed when dropped, so that an error leaves nothing running.
pub struct Spawned {
    name: &'static str,
    pub child: Child,
    pub log: PathBuf,
    /// The child's stdout, when it was piped.
    pub stdout: Option<Arc<Mutex<BufReader<ChildStdout>>>>,
}

impl Spawned {
    /// Starts `command` with stderr going to `log`, and stdout too with stdin empty, unless
    /// `piped` (then stdin and stdout are pipes to this process).
    pub fn start(
        name: &'static str,
        mut command: Command,
        log: &Path,
        piped: bool,
    ) -> anyhow::Result<Spawned> {
        let out = File::create(log)?;
        if piped {
            command.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            command.stdin(Stdio::null()).stdout(out.try_clone()?);
        }
        let mut child = command
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        let stdout = child
            .stdout
            .take()
            .map(|s| Arc::new(Mutex::new(BufReader::new(s))));
        Ok(Spawned {
            name,
            child,
            log: log.to_owned(),
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(20).collect();
                let tail: Vec<_> = tail.into_iter().rev().collect();
                bail!("{} exited ({status}):\n{}", self.name, tail.join("\n"))
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Distinct free loopback ports: all are held open until all are chosen.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| StdTcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------------------------------
// /proc

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
    Ok(kb * 1024)
}

/// User plus system CPU seconds of a process so far (/proc/PID/stat).
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces: the state
    // is field 3, utime field 14 and stime field 15.
    let after_name = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on every Linux architecture that matters here.
    Ok(ticks as f64 / 100.0)
}

pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// /proc/loadavg's 1, 5 and 15 minute averages: how busy the machine was besides us.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A fresh temporary directory, in `parent` when given; removed when dropped.
pub fn work_dir(parent: Option<&Path>) -> std::io::Result<TempDir> {
    match parent {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
}

// ---------------------------------------------------------------------------------------
// The binary under test

/// The binary to measure: `given`, else [`default_server_bin`]. Warns when this benchmark
/// is a debug build, and when the binary is older than the sources.
pub fn server_bin_to_measure(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if cfg!(debug_assertions) {
        eprintln!("warning: built without --release; the figures mean little");
    }
    let bin = match given {
        Some(path) => path.to_owned(),
        None => default_server_bin()?,
    };
    warn_if_stale(&bin);
    Ok(bin)
}

/// `chatserver` in the profile directory this example was built into (examples live in
/// `target/<profile>/examples/`).
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot tell the target directory from this executable's path")?;
    let bin = profile_dir.join("chatserver");
    ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build --release --bin chatserver` first \
         (scripts/bench-upload.sh and scripts/bench-ws.sh do)",
        bin.display()
    );
    Ok(bin)
}

/// Warns when a source file is newer than the server binary: `cargo run --example` does not
/// rebuild the binary, so the figures might be for older code.
pub fn warn_if_stale(bin: &Path) {
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(bin) else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut pending = vec![root.join("src"), root.join("Cargo.toml")];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if let Some(time) = modified(&path)
            && newest.as_ref().is_none_or(|(t, _)| time > *t)
        {
            newest = Some((time, path));
        }
    }
    if let Some((time, path)) = newest
        && time > built
    {
        eprintln!(
            "warning: {} is newer than {}: run `cargo build --release --bin chatserver`",
            path.display(),
            bin.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Output

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The median; the mean of the middle two for an even count, 0 for no values.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------------------
// Latency histograms

/// Latencies in µs, log-linear buckets: exact below 64 µs, then 64 buckets per power of
/// two (under 1.6 % error). Lock-free, so thousands of reader tasks can share it.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = SUB + 31 * SUB;

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn bucket(value: u64) -> usize {
        if value < SUB as u64 {
            return value as usize;
        }
        let exp = 63 - value.leading_zeros(); // at least SUB_BITS
        let shift = exp - SUB_BITS;
        let mantissa = (value >> shift) as usize; // in SUB..2 * SUB
        (SUB + shift as usize * SUB + mantissa - SUB).min(BUCKETS - 1)
    }

    /// The largest value that falls in bucket `i`.
    pub fn upper_bound(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i - SUB) / SUB;
        let mantissa = ((i - SUB) % SUB + SUB) as u64;
        ((mantissa + 1) << shift) - 1
    }

    pub fn record(&self, value: u64) {
        self.buckets[Self::bucket(value)].fetch_add(1, Ordering::Relaxed);
    }

    /// The value at quantile `q` (0..=1), as its bucket's upper bound; 0 when empty.
    pub fn percentile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::upper_bound(i);
            }
        }
        Self::upper_bound(BUCKETS - 1)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket frames

/// One complete unmasked frame at the start of `bytes`: (opcode, payload, length in all).
pub fn server_frame(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let (len, header) = match second & 0x7F {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = bytes.get(header..header + len)?;
    Some((first & 0x0F, payload, header + len))
}

/// Message content: `b<step>.<due time in µs since the bench started>`.
pub fn stamp(step: usize, due_us: u64) -> String {
    format!("b{step}.{due_us}")
}

/// Finds the stamp in an event frame by substring search: cheaper than parsing the JSON,
/// and the client shares the CPUs with the server.
pub fn parse_stamp(frame: &str) -> Option<(usize, u64)> {
    const KEY: &str = "\"content\":\"b";
    let rest = &frame[frame.find(KEY)? + KEY.len()..];
    let (step, rest) = rest.split_once('.')?;
    let end = rest.find('"')?;
    Some((step.parse().ok()?, rest[..end].parse().ok()?))
}

/// Microseconds since this process first asked: the clock stamps and latencies share.
pub fn now_us() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// Polls `{base}/healthz` until it answers 2xx; fails early if `server` exits, or after
/// `within`.
pub async fn wait_healthy(
    client: &reqwest::Client,
    base: &str,
    server: &mut Spawned,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        server.check_running()?;
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the server did not become healthy in {} s",
        within.as_secs()
    )
}

/// `postgres://u@h:5432/postgres?x=y` with the database `name` instead.
pub fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    format!("{root}/{name}{query}")
}
