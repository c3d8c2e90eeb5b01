//! Login memory benchmark: what registrations and logins leave in the server's memory.
//!
//! Argon2id needs 19 MiB per hash. The server once allocated it per hash on the blocking
//! pool, and the allocator's per-thread arenas kept it: 448 MB after 50 registrations,
//! 888 MB under a login spray. This starts a server (a fresh process on an empty SQLite
//! database), reads its RSS when idle, registers `--users` users through the API, then runs
//! `--logins` logins from `--clients` concurrent clients (right and wrong passwords mixed),
//! reading the RSS at each step. The target: RSS after 10,000 logins at most 64 MiB above
//! idle. With `--baseline-bin` the same run is made against another build first, and the
//! table shows both side by side.
//!
//! ```sh
//! scripts/bench-logins.sh                       # 10,000 logins
//! scripts/bench-logins.sh --logins 1000 --baseline-bin /path/to/older/chatserver
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use serde_json::json;

use common::{
    Spawned, free_ports, load_average, mib, proc_status_bytes, server_bin_to_measure, wait_healthy,
};

const PASSWORD: &str = "bench password 123";
const TARGET_MIB_ABOVE_IDLE: f64 = 64.0;

#[derive(Parser)]
#[command(about = "RSS of the chat server after registrations and logins")]
struct Args {
    /// Users registered through the API.
    #[arg(long, default_value_t = 250)]
    users: usize,
    /// Logins after registration (one in ten with a wrong password).
    #[arg(long, default_value_t = 10_000)]
    logins: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// The chat server binary (default: `chatserver` beside this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Another build to measure the same way first, for a side-by-side table.
    #[arg(long)]
    baseline_bin: Option<PathBuf>,
}

struct Readings {
    label: String,
    idle: u64,
    after_registrations: u64,
    after_logins: u64,
    peak: u64,
    logins_per_second: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let candidate = server_bin_to_measure(args.server_bin.as_deref())?;
    println!(
        "{} users, {} logins from {} clients; load average {}",
        args.users,
        args.logins,
        args.clients,
        load_average()
    );
    let mut rows = Vec::new();
    if let Some(baseline) = &args.baseline_bin {
        rows.push(measure("baseline", baseline, &args).await?);
    }
    rows.push(measure("candidate", &candidate, &args).await?);

    println!(
        "\n| build | idle MiB | after {} registrations | after {} logins | peak | above idle | logins/s |",
        args.users, args.logins
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            r.label,
            mib(r.idle),
            mib(r.after_registrations),
            mib(r.after_logins),
            mib(r.peak),
            mib(r.after_logins.saturating_sub(r.idle)),
            r.logins_per_second
        );
    }
    let last = rows.last().expect("the candidate");
    let above = mib(last.after_logins.saturating_sub(last.idle));
    println!(
        "\ncandidate: {above:.1} MiB above idle after {} logins (target <= {TARGET_MIB_ABOVE_IDLE} MiB): {}",
        args.logins,
        if above <= TARGET_MIB_ABOVE_IDLE {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

async fn measure(label: &str, bin: &Path, args: &Args) -> anyhow::Result<Readings> {
    println!("\n--- {label}: {}", bin.display());
    let dir = tempfile::tempdir()?;
    let port = free_ports(1)?[0];
    let mut command = Command::new(bin);
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", "sqlite://data/chat.db")
        .env("JWT_SECRET", "bench-logins-secret-0123456789abcdef")
        .env("GC_INTERVAL_SECONDS", "0")
        // The per-username limit would refuse a spray on few accounts: not what is measured.
        .env("LOGIN_ATTEMPTS_PER_MINUTE", "100000")
        // Every benchmark user comes from 127.0.0.1.
        .env("LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS", "100000")
        .env("REGISTRATIONS_PER_MINUTE_PER_ADDRESS", "100000")
        .env("RUST_LOG", "warn");
    let mut server = Spawned::start("chatserver", command, &dir.path().join("server.log"), false)?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_healthy(&client, &base, &mut server, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = |server: &Spawned| proc_status_bytes(server.pid(), "VmRSS");
    let idle = rss(&server)?;
    println!("idle: {:.1} MiB", mib(idle));

    let names: Vec<String> = (0..args.users).map(|i| format!("user{i:05}")).collect();
    let started = Instant::now();
    run_concurrently(&names, args.clients, |name| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body = json!({ "username": name, "password": PASSWORD });
            let response = client
                .post(format!("{base}/api/auth/register"))
                .json(&body)
                .send()
                .await?;
            ensure!(response.status() == 201, "register: {}", response.status());
            Ok(())
        }
    })
    .await?;
    let after_registrations = rss(&server)?;
    println!(
        "{} registrations in {:.1} s: {:.1} MiB",
        args.users,
        started.elapsed().as_secs_f64(),
        mib(after_registrations)
    );

    let attempts: Vec<(String, bool)> = (0..args.logins)
        .map(|i| (names[i % names.len()].clone(), i % 10 != 9))
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        let total = args.logins;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                println!("  {} / {total} logins", done.load(Ordering::Relaxed));
            }
        })
    };
    run_concurrently(&attempts, args.clients, |(name, right)| {
        let (client, base, done) = (client.clone(), base.clone(), done.clone());
        async move {
            let password = if right {
                PASSWORD
            } else {
                "wrong password 123"
            };
            let body = json!({ "username": name, "password": password });
            let response = client
                .post(format!("{base}/api/auth/login"))
                .json(&body)
                .send()
                .await?;
            let expected = if right { 200 } else { 401 };
            ensure!(
                response.status() == expected,
                "login: {}",
                response.status()
            );
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    progress.abort();
    let seconds = started.elapsed().as_secs_f64();
    let after_logins = rss(&server)?;
    let peak = proc_status_bytes(server.pid(), "VmHWM")?;
    println!(
        "{} logins in {seconds:.1} s: {:.1} MiB (peak {:.1} MiB)",
        args.logins,
        mib(after_logins),
        mib(peak)
    );
    server.check_running()?;
    Ok(Readings {
        label: label.to_owned(),
        idle,
        after_registrations,
        after_logins,
        peak,
        logins_per_second: args.logins as f64 / seconds,
    })
}

/// Runs `work` on every item, at most `concurrency` at a time; the first error ends it.
async fn run_concurrently<T, F, Fut>(items: &[T], concurrency: usize, work: F) -> anyhow::Result<()>
where
    T: Clone,
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for item in items {
        if running.len() >= concurrency.max(1) {
            running.join_next().await.context("a task")???;
        }
        running.spawn(work(item.clone()));
    }
    while let Some(result) = running.join_next().await {
        result??;
    }
    Ok(())
}
