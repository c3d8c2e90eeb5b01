//! Verify benchmark: `chatserver verify` (without `--rehash`) over N objects of the local
//! store recorded in SQLite, for each N given. Prints the objects checked per second and the
//! verify process's peak RSS (VmHWM), which should not grow with N: the table and the store
//! are paged and merged by key, never held whole. The issue's targets: at least 20,000
//! objects/s and under 64 MiB.
//!
//! Run it with `scripts/bench-verify.sh` (a quick run: `--counts 20000`), or by hand:
//!
//! ```sh
//! cargo build --release --bin chatserver --example bench_verify
//! cargo run --release --example bench_verify -- --counts 50000,200000
//! ```
//!
//! For each N, a fresh directory gets an SQLite database with N `file_uploads` rows (written
//! straight through diesel, in batches) and N small objects written straight into the local
//! store's layout (`files/objects/{prefix}/channels/{c}/yyyy/mm/dd/{uuid}.png`, 50 channels
//! over 28 days, so directories hold about N / 1,400 files each, as a busy deployment's
//! would). Then `chatserver verify` runs as a child process (`chatserver` next to this
//! example's directory, i.e. `target/release/chatserver`); its VmHWM is read from /proc
//! every 5 ms and once more when its report arrives, before it exits. The objects were just
//! written, so they are in the page cache: these are warm-cache figures.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::NaiveDate;
use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use chatserver::db::schema::file_uploads;
use common::{cpu_count, load_average, mib, proc_status_bytes, server_bin_to_measure, work_dir};

const PREFIX: &str = "dbenchverify0";
const CHANNELS: usize = 50;
const DAYS: usize = 28;
const BATCH: usize = 1000;
const JWT_SECRET: &str = "bench-verify-secret-0123456789abcdef";
/// The issue's targets.
const TARGET_OBJECTS_PER_SECOND: f64 = 20_000.0;
const TARGET_PEAK_MIB: f64 = 64.0;

#[derive(Parser)]
#[command(about = "chatserver verify: objects per second and peak memory against the store's size")]
struct Args {
    /// Object counts, comma-separated; each is a fresh store and database.
    #[arg(long, value_delimiter = ',', default_values_t = vec![50_000usize, 200_000])]
    counts: Vec<usize>,
    /// Bytes of each object.
    #[arg(long, default_value_t = 256)]
    object_size: usize,
    /// Run `verify --rehash` instead (reads every object; not what the targets are for).
    #[arg(long)]
    rehash: bool,
    /// Where the temporary stores go (default: $TMPDIR).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// The chatserver binary to measure (default: next to this example's directory).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

struct Readings {
    objects: usize,
    generate_seconds: f64,
    verify_seconds: f64,
    peak_rss: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = server_bin_to_measure(args.server_bin.as_deref())?;
    println!(
        "chatserver verify{} over the local store and SQLite; {} cores, load average {}",
        if args.rehash { " --rehash" } else { "" },
        cpu_count(),
        load_average()
    );
    let mut rows = Vec::new();
    for &count in &args.counts {
        let dir = work_dir(args.tmp_dir.as_deref())?;
        let started = Instant::now();
        generate(dir.path(), count, args.object_size)?;
        let generate_seconds = started.elapsed().as_secs_f64();
        println!("{count} objects and rows generated in {generate_seconds:.1} s");
        let (verify_seconds, peak_rss) = run_verify(&bin, dir.path(), count, args.rehash)?;
        println!(
            "verify: {verify_seconds:.2} s, {:.0} objects/s, peak RSS {:.1} MiB",
            count as f64 / verify_seconds,
            mib(peak_rss)
        );
        rows.push(Readings {
            objects: count,
            generate_seconds,
            verify_seconds,
            peak_rss,
        });
    }

    println!("\n| objects | generated in s | verify s | objects/s | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.2} | {:.0} | {:.1} |",
            r.objects,
            r.generate_seconds,
            r.verify_seconds,
            r.objects as f64 / r.verify_seconds,
            mib(r.peak_rss)
        );
    }
    let slowest = rows
        .iter()
        .map(|r| r.objects as f64 / r.verify_seconds)
        .fold(f64::INFINITY, f64::min);
    let peak = rows.iter().map(|r| mib(r.peak_rss)).fold(0.0, f64::max);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "\nslowest: {slowest:.0} objects/s (target >= {TARGET_OBJECTS_PER_SECOND:.0}): {}",
        met(slowest >= TARGET_OBJECTS_PER_SECOND)
    );
    println!(
        "highest peak RSS: {peak:.1} MiB (target < {TARGET_PEAK_MIB:.0} MiB): {}",
        met(peak < TARGET_PEAK_MIB)
    );
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        println!(
            "peak RSS from {} to {} objects: {:+.1} MiB ({}x the objects)",
            first.objects,
            last.objects,
            mib(last.peak_rss) - mib(first.peak_rss),
            last.objects / first.objects.max(1)
        );
    }
    Ok(())
}

/// A database with `count` rows and a local store with their `count` objects.
fn generate(dir: &Path, count: usize, object_size: usize) -> anyhow::Result<()> {
    let db_path = dir.join("chat.db");
    let db =
        chatserver::db::Db::connect(&chatserver::config::DatabaseTarget::Sqlite(db_path.clone()))?;
    db.migrate()?;
    drop(db);
    let mut conn = SqliteConnection::establish(&db_path.to_string_lossy())?;
    conn.batch_execute(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;
         INSERT INTO deployment (id, key_prefix) VALUES (1, '{PREFIX}');
         INSERT INTO users (id, username, display_name, password_hash, created_at)
         VALUES (1, 'bench', 'bench', 'x', CURRENT_TIMESTAMP);"
    ))?;
    for c in 1..=CHANNELS {
        conn.batch_execute(&format!(
            "INSERT INTO channels (id, name, is_private, created_by, created_at)
             VALUES ({c}, 'channel-{c}', FALSE, 1, CURRENT_TIMESTAMP);
             INSERT INTO messages (id, channel_id, user_id, content, created_at)
             VALUES ({c}, {c}, 1, 'files', CURRENT_TIMESTAMP);"
        ))?;
    }
    let objects = dir.join("files/objects");
    let uploaded_at = chrono::Utc::now().naive_utc();
    let mut body = common_body(object_size);
    let mut i = 0;
    while i < count {
        let mut batch = Vec::with_capacity(BATCH);
        for n in i..(i + BATCH).min(count) {
            let channel = n % CHANNELS + 1;
            let day = NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date")
                + chrono::Days::new((n / CHANNELS % DAYS) as u64);
            let key = format!(
                "{PREFIX}/channels/{channel}/{}/{}.png",
                day.format("%Y/%m/%d"),
                uuid::Uuid::new_v4()
            );
            // Each object differs (its number in the first bytes), as real files would.
            body[8..16].copy_from_slice(&(n as u64).to_le_bytes());
            let path = objects.join(&key);
            std::fs::create_dir_all(path.parent().expect("a parent"))?;
            std::fs::write(&path, &body)?;
            batch.push((
                file_uploads::message_id.eq(channel as i32),
                file_uploads::channel_id.eq(channel as i32),
                file_uploads::file_name.eq(format!("file-{n}.png")),
                file_uploads::s3_key.eq(key),
                file_uploads::content_type.eq(Some("image/png")),
                file_uploads::file_size.eq(Some(body.len() as i64)),
                file_uploads::sha256.eq(Some(hex::encode(Sha256::digest(&body)))),
                file_uploads::uploaded_by.eq(Some(1)),
                file_uploads::uploaded_at.eq(uploaded_at),
                file_uploads::is_deleted.eq(false),
            ));
        }
        i += batch.len();
        conn.transaction(|c| {
            diesel::insert_into(file_uploads::table)
                .values(&batch)
                .execute(c)
        })?;
    }
    Ok(())
}

/// A PNG signature, then filler.
fn common_body(size: usize) -> Vec<u8> {
    let mut body = b"\x89PNG\r\n\x1a\n".to_vec();
    body.resize(size.max(16), 0x5a);
    body
}

/// Runs `chatserver verify` on the store in `dir`; (seconds, peak RSS).
fn run_verify(bin: &Path, dir: &Path, count: usize, rehash: bool) -> anyhow::Result<(f64, u64)> {
    let mut command = Command::new(bin);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("chat.db").display()),
        )
        .env("DATA_DIR", dir)
        .env("JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "warn")
        .arg("verify")
        .args(rehash.then_some("--rehash"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let mut child = command.spawn().context("starting chatserver verify")?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    // The report is one line at the end: read it on a thread while this one samples VmHWM.
    let reader = std::thread::spawn(move || {
        let mut report = String::new();
        BufReader::new(stdout)
            .read_line(&mut report)
            .map(|_| report)
    });
    let mut peak = 0u64;
    while !reader.is_finished() {
        if let Ok(hwm) = proc_status_bytes(pid, "VmHWM") {
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Once more: the process may still be there between writing its report and exiting.
    if let Ok(hwm) = proc_status_bytes(pid, "VmHWM") {
        peak = peak.max(hwm);
    }
    let report = reader.join().expect("the reader thread")?;
    let status = child.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    let report: serde_json::Value =
        serde_json::from_str(&report).with_context(|| format!("verify's report ({status})"))?;
    ensure!(status.success(), "verify exited {status}: {report}");
    ensure!(report["ok"] == true, "verify found problems: {report}");
    let rehashed = if rehash { count } else { 0 };
    ensure!(
        report["checked"]["objects"] == count
            && report["checked"]["rows"] == count
            && report["checked"]["rehashed"] == rehashed,
        "verify checked other counts: {}",
        report["checked"]
    );
    ensure!(peak > 0, "no VmHWM read from /proc/{pid}/status");
    Ok((seconds, peak))
}
