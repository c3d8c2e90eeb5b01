//! Search benchmark (issue 19): `GET /api/search` against `LIKE '%word%'` over the same data
//! in the same run, and `GET /api/channels` for a user in 200 channels, on SQLite and
//! PostgreSQL.
//!
//! For each backend this starts the server (`chatserver` beside this example) on a fresh
//! database and does what users do through the API: registers a searcher and a few authors,
//! the searcher creates `--member-channels` channels (200), the authors join the first
//! `--channels` (100). The `--messages` messages (1,000,000) are then written straight into
//! the database by the server's own insert path (`db::messages::insert`, and
//! `db::mentions::resolve`/`set` for the ones with an `@`; the same statements, triggers
//! and indexes as `POST .../messages`), because a million posts through the API take too
//! long on a small machine. Text: 4 to 24 words drawn Zipf-like from a list of about 200
//! English words, one message in 20 a Chinese or Japanese sentence, one in 5,000 with the
//! rare word `zanzibar`, one in 500 mentioning the searcher. The searcher then marks every
//! channel read through the API up to a point that leaves 0 to `--unread-max` messages
//! unread.
//!
//! Measured at `--concurrency` (8) over keep-alive connections, `--rounds` times (the
//! figures are medians of the rounds' percentiles; the per-round lines show the spread):
//! search for a common word, a rare word, a prefix and a CJK run, each beside
//! `lower(content) LIKE '%word%' ORDER BY id DESC LIMIT 20` with the same membership join, run
//! by this process on its own connections (no HTTP, no JSON: the LIKE side is flattered);
//! and `GET /api/channels` for the searcher (and, for comparison only, for a user who has
//! read nothing). Targets: search p99 <= 50 ms and >= 20x faster than LIKE for the rare word;
//! channel list p99 <= 20 ms.
//!
//! ```sh
//! cargo build --release --bin chatserver --example bench_search
//! cargo run --release --example bench_search -- --messages 1000000 --backends sqlite,postgres
//! cargo run --release --example bench_search -- --messages 100000 --backends sqlite   # quick
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chatserver::config::DatabaseTarget;
use chatserver::db::{AnyConnection, Db, placeholders};
use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use common::{
    Histogram, Spawned, free_ports, load_average, now_us, server_bin_to_measure, wait_healthy,
    with_database_name,
};

const PASSWORD: &str = "bench password 123";
const JWT_SECRET: &str = "bench-search-secret-0123456789abcdef";
const AUTHORS: usize = 4;
const RARE: &str = "zanzibar";
const TARGET_P99_MS: f64 = 50.0;
const TARGET_VS_LIKE: f64 = 20.0;
const TARGET_CHANNELS_P99_MS: f64 = 20.0;

/// Common English words, most frequent first (drawn with weight 1 / rank).
const WORDS: &str = "\
    the to and a of is in it for we on that this you be with have can will not are at \
    just so do but if meeting get me from what up all about by or there an was think out \
    now should today one some need when they deploy like see would check tomorrow time \
    know back team please thanks could make new after build work also still review \
    release update next issue test week server before sure client done fix looks good \
    yes call morning design customer ticket again which afternoon report budget coffee \
    lunch send doc draft roadmap incident planning database network weekly feature bug \
    branch merge staging production rollback metrics dashboard alert latency migration \
    schema index query cache memory upload download invoice contract hiring interview \
    offsite holiday vacation schedule agenda minutes slides demo feedback quarter target \
    revenue pricing launch campaign newsletter support escalation outage postmortem \
    oncall pager rotation runbook backup restore storage bucket permissions password \
    login session token browser mobile android iphone tablet laptop monitor keyboard \
    printer office kitchen parking elevator weather traffic train airport flight hotel \
    conference workshop training onboarding documentation architecture performance \
    benchmark throughput capacity kubernetes container terraform pipeline artifact \
    compiler refactor";

/// Sentences written without spaces, which the trigram indexes serve.
const CJK: &[&str] = &[
    "明日の会議室は三階です",
    "项目计划已经更新了",
    "今日は打ち合わせがあります",
    "我们下午讨论一下预算",
    "資料を共有してください",
    "服务器今晚需要重启",
    "週末の予定はどうですか",
    "客户反馈非常积极",
];

#[derive(Parser)]
#[command(about = "Search and channel list latency against LIKE, on SQLite and PostgreSQL")]
struct Args {
    /// Messages in all.
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Channels the messages are spread over.
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Channels the searcher is a member of (the first `--channels` of them hold messages).
    #[arg(long, default_value_t = 200)]
    member_channels: usize,
    /// At most this many unread messages per channel for the searcher.
    #[arg(long, default_value_t = 200)]
    unread_max: usize,
    /// Backends to run, comma-separated: sqlite, postgres.
    #[arg(long, default_value = "sqlite,postgres")]
    backends: String,
    /// The PostgreSQL server; a fresh database is created on it, and dropped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Measured requests per query and round.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Measured LIKE queries per query and round: the baseline, seconds each at a million
    /// messages, so fewer (its p99 is then close to its maximum).
    #[arg(long, default_value_t = 32)]
    like_requests: usize,
    /// Measurement rounds (after one unmeasured warm-up round).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Concurrent requests.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The chat server binary (default: `chatserver` beside this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

struct Instance {
    _server: Spawned,
    base: String,
    db: Db,
    /// The searcher's token and id.
    token: String,
    user_id: i32,
    /// A member of every channel who has read nothing.
    unread_token: String,
    /// (server URL, database name) of the PostgreSQL database to drop.
    created: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

/// p50/p99 in ms per round.
#[derive(Default)]
struct Figures {
    rounds: Vec<(f64, f64)>,
    hits: usize,
}

impl Figures {
    fn median(&self, pick: impl Fn(&(f64, f64)) -> f64) -> f64 {
        common::median(self.rounds.iter().map(pick))
    }
    fn p50(&self) -> f64 {
        self.median(|r| r.0)
    }
    fn p99(&self) -> f64 {
        self.median(|r| r.1)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.channels >= 1 && args.member_channels >= args.channels,
        "--member-channels must be at least --channels"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bin = server_bin_to_measure(args.server_bin.as_deref())?;
    println!(
        "{} messages over {} channels; searcher in {} channels; {} requests x {} rounds at \
         concurrency {}; {} CPUs, load average {}",
        args.messages,
        args.channels,
        args.member_channels,
        args.requests,
        args.rounds,
        args.concurrency,
        common::cpu_count(),
        load_average()
    );
    let mut failed = false;
    for name in args.backends.split(',').map(str::trim) {
        let backend = match name {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => bail!("unknown backend {other:?}: sqlite or postgres"),
        };
        let instance = runtime.block_on(start(&bin, backend, &args))?;
        let result = runtime.block_on(measure(backend, &instance, &args));
        let created = instance.created.clone();
        drop(instance);
        runtime.block_on(drop_database(created));
        failed |= !result?;
    }
    println!("\nload average after: {}", load_average());
    if failed {
        println!("some targets were NOT met");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Setting up

async fn start(bin: &Path, backend: Backend, args: &Args) -> anyhow::Result<Instance> {
    println!("\n--- {}: {}", backend.name(), bin.display());
    let dir = tempfile::tempdir()?;
    let (url, target, created) = match backend {
        Backend::Sqlite => {
            let path = dir.path().join("chat.db");
            (
                format!("sqlite://{}", path.display()),
                DatabaseTarget::Sqlite(path),
                None,
            )
        }
        Backend::Postgres => {
            let name = format!(
                "bench_search_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let (server, create) = (args.postgres.clone(), name.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut conn = diesel::PgConnection::establish(&server)?;
                conn.batch_execute(&format!("CREATE DATABASE {create}"))?;
                Ok(())
            })
            .await??;
            let url = with_database_name(&args.postgres, &name);
            (
                url.clone(),
                DatabaseTarget::Postgres(url),
                Some((args.postgres.clone(), name)),
            )
        }
    };
    let port = free_ports(1)?[0];
    let mut command = Command::new(bin);
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &url)
        .env("DATA_DIR", dir.path().join("data"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("GC_INTERVAL_SECONDS", "0")
        .env("REGISTRATIONS_PER_MINUTE_PER_ADDRESS", "100000")
        .env("RUST_LOG", "warn");
    let mut server =
        match Spawned::start("chatserver", command, &dir.path().join("server.log"), false) {
            Ok(server) => server,
            Err(e) => {
                drop_database(created).await;
                return Err(e);
            }
        };
    let base = format!("http://127.0.0.1:{port}");
    let ready = async {
        let client = http_client()?;
        wait_healthy(&client, &base, &mut server, Duration::from_secs(60)).await?;
        // The server has migrated the database; this process writes the messages into it.
        let db = Db::connect(&target)?;
        let ids = set_up(&client, &base, &db, args).await?;
        anyhow::Ok((db, ids))
    };
    match ready.await {
        Ok((db, (token, user_id, unread_token))) => Ok(Instance {
            _server: server,
            base,
            db,
            token,
            user_id,
            unread_token,
            created,
            _dir: dir,
        }),
        Err(e) => {
            drop(server);
            drop_database(created).await;
            Err(e)
        }
    }
}

/// Users, channels and membership through the API; messages by the server's insert path;
/// read positions through the API. Returns the searcher's token and id, and the token of
/// the user who has read nothing.
async fn set_up(
    client: &reqwest::Client,
    base: &str,
    db: &Db,
    args: &Args,
) -> anyhow::Result<(String, i32, String)> {
    let started = Instant::now();
    let mut sessions = Vec::new();
    for name in ["searcher", "skimmer"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..AUTHORS).map(|i| format!("author{i}")))
    {
        let session = post(
            client,
            &format!("{base}/api/auth/register"),
            None,
            json!({ "username": name, "password": PASSWORD }),
        )
        .await?;
        let token = session["token"].as_str().context("no token")?.to_owned();
        let id = session["user"]["id"].as_i64().context("no user id")? as i32;
        sessions.push((token, id));
    }
    let (searcher, searcher_id) = sessions[0].clone();
    let mut channels = Vec::new();
    for c in 0..args.member_channels {
        let channel = post(
            client,
            &format!("{base}/api/channels"),
            Some(&searcher),
            json!({ "name": format!("channel-{c}") }),
        )
        .await?;
        channels.push(channel["id"].as_i64().context("no channel id")? as i32);
    }
    for (c, channel) in channels.iter().enumerate() {
        for (s, (token, _)) in sessions.iter().enumerate().skip(1) {
            // The skimmer joins all; authors only the channels with messages.
            if s == 1 || c < args.channels {
                post(
                    client,
                    &format!("{base}/api/channels/{channel}/join"),
                    Some(token),
                    json!({}),
                )
                .await?;
            }
        }
    }
    println!(
        "{} users, {} channels and their members through the API in {:.1} s",
        sessions.len(),
        channels.len(),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let authors: Vec<i32> = sessions[2..].iter().map(|(_, id)| *id).collect();
    let loaded = {
        let (db, channels) = (db.clone(), channels[..args.channels].to_vec());
        let messages = args.messages;
        tokio::task::spawn_blocking(move || load(&db, &channels, &authors, messages)).await??
    };
    println!(
        "{} messages ({} mentioning the searcher) written by the server's insert path in {:.1} s",
        args.messages,
        loaded.mentions,
        started.elapsed().as_secs_f64()
    );

    // Read positions: each channel read up to 0..=unread_max messages before its newest.
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    for (channel, ids) in channels.iter().zip(&loaded.ids_by_channel) {
        if ids.is_empty() {
            continue;
        }
        let unread = rng.gen_range(0..=args.unread_max).min(ids.len() - 1);
        let read_to = ids[ids.len() - 1 - unread];
        let response = client
            .post(format!("{base}/api/channels/{channel}/read"))
            .bearer_auth(&searcher)
            .json(&json!({ "message_id": read_to }))
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "read: {}",
            response.status()
        );
    }
    let db2 = db.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = db2.connection()?;
        match &mut *conn {
            AnyConnection::Sqlite(c) => {
                c.batch_execute("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);")?
            }
            AnyConnection::Postgresql(c) => c.batch_execute("VACUUM ANALYZE;")?,
        }
        Ok(())
    })
    .await??;
    println!(
        "read positions through the API and ANALYZE in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((searcher, searcher_id, sessions[1].0.clone()))
}

struct Loaded {
    /// Message ids per channel, ascending.
    ids_by_channel: Vec<Vec<i32>>,
    mentions: usize,
}

/// The messages, by the server's insert path, in transactions of 1,000.
fn load(db: &Db, channels: &[i32], authors: &[i32], count: usize) -> anyhow::Result<Loaded> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let weights: Vec<f64> = (0..words.len()).map(|r| 1.0 / (r as f64 + 1.0)).collect();
    let total: f64 = weights.iter().sum();
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / total;
            Some(*acc)
        })
        .collect();
    let mut ids_by_channel = vec![Vec::new(); channels.len()];
    let mut mentions = 0;
    let mut conn = db.connection()?;
    let conn: &mut AnyConnection = &mut conn;
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(1000);
        conn.transaction(|conn| -> anyhow::Result<()> {
            for i in done..done + batch {
                let c = rng.gen_range(0..channels.len());
                let author = authors[rng.gen_range(0..authors.len())];
                let mut text = String::new();
                if i % 20 == 7 {
                    text.push_str(CJK[rng.gen_range(0..CJK.len())]);
                } else {
                    for w in 0..rng.gen_range(4..=24) {
                        if w > 0 {
                            text.push(' ');
                        }
                        let x: f64 = rng.r#gen();
                        let rank = cumulative.partition_point(|&p| p < x).min(words.len() - 1);
                        text.push_str(words[rank]);
                    }
                }
                if i % 5000 == 4999 {
                    text.push(' ');
                    text.push_str(RARE);
                }
                if i % 500 == 250 {
                    text.push_str(" @searcher");
                }
                let row = chatserver::db::messages::insert(conn, channels[c], author, &text, None)?;
                if text.contains('@') {
                    let ids = chatserver::db::mentions::resolve(conn, channels[c], author, &text)?;
                    mentions += ids.len();
                    chatserver::db::mentions::set(conn, row.id, channels[c], &ids)?;
                }
                ids_by_channel[c].push(row.id);
            }
            Ok(())
        })?;
        done += batch;
        if done % 100_000 == 0 {
            eprintln!("  {done} messages");
        }
    }
    Ok(Loaded {
        ids_by_channel,
        mentions,
    })
}

// ---------------------------------------------------------------------------------------
// Measuring

async fn measure(backend: Backend, instance: &Instance, args: &Args) -> anyhow::Result<bool> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let queries = [
        ("common word", "meeting"),
        ("rare word", RARE),
        ("prefix", "deplo"),
        ("CJK run", "会議室"),
    ];
    let mut search: Vec<Figures> = queries.iter().map(|_| Figures::default()).collect();
    let mut like: Vec<Figures> = queries.iter().map(|_| Figures::default()).collect();
    let mut channels = Figures::default();
    let mut unread_channels = Figures::default();
    for round in 0..=args.rounds {
        let count = if round == 0 {
            (args.requests / 4).max(args.concurrency)
        } else {
            args.requests
        };
        for (q, (_, word)) in queries.iter().enumerate() {
            let url = format!(
                "{}/api/search?q={}&limit=20",
                instance.base,
                urlencode(word)
            );
            let (p50, p99, body) =
                http_run(&client, &url, &instance.token, count, args.concurrency).await?;
            let like_count = if round == 0 {
                args.concurrency
            } else {
                args.like_requests.max(args.concurrency)
            };
            let (l50, l99, hits) = like_run(instance, word, like_count, args.concurrency).await?;
            if round > 0 {
                search[q].rounds.push((p50, p99));
                search[q].hits = body["messages"].as_array().map_or(0, Vec::len);
                like[q].rounds.push((l50, l99));
                like[q].hits = hits;
                println!(
                    "round {round}: {:11} search p50 {p50:7.2} p99 {p99:7.2} ms | LIKE p50 {l50:8.2} p99 {l99:8.2} ms",
                    queries[q].0
                );
            }
        }
        let url = format!("{}/api/channels", instance.base);
        let (p50, p99, body) =
            http_run(&client, &url, &instance.token, count, args.concurrency).await?;
        let (u50, u99, _) = http_run(
            &client,
            &url,
            &instance.unread_token,
            (count / 4).max(args.concurrency),
            args.concurrency,
        )
        .await?;
        if round > 0 {
            channels.rounds.push((p50, p99));
            channels.hits = body.as_array().map_or(0, Vec::len);
            unread_channels.rounds.push((u50, u99));
            println!(
                "round {round}: channel list p50 {p50:7.2} p99 {p99:7.2} ms | nothing read p50 {u50:7.2} p99 {u99:7.2} ms"
            );
        }
    }

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut all_met = true;
    println!(
        "\n{} (medians of {} rounds of {} requests at concurrency {})",
        backend.name(),
        args.rounds,
        args.requests,
        args.concurrency
    );
    println!(
        "| query | word | hits | search p50 ms | search p99 ms | LIKE p50 ms | LIKE p99 ms | LIKE/search p99 | targets |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (q, (label, word)) in queries.iter().enumerate() {
        let (s, l) = (&search[q], &like[q]);
        let speedup = l.p99() / s.p99();
        let mut targets = format!(
            "p99 <= {TARGET_P99_MS} ms: {}",
            verdict(s.p99() <= TARGET_P99_MS)
        );
        all_met &= s.p99() <= TARGET_P99_MS;
        if *word == RARE {
            targets += &format!(
                "; >= {TARGET_VS_LIKE}x LIKE: {}",
                verdict(speedup >= TARGET_VS_LIKE)
            );
            all_met &= speedup >= TARGET_VS_LIKE;
        }
        println!(
            "| {label} | {word} | {} / {} | {:.2} | {:.2} | {:.2} | {:.2} | {speedup:.1}x | {targets} |",
            s.hits,
            l.hits,
            s.p50(),
            s.p99(),
            l.p50(),
            l.p99()
        );
    }
    all_met &= channels.p99() <= TARGET_CHANNELS_P99_MS;
    println!(
        "| GET /api/channels | {} channels, up to {} unread each | | {:.2} | {:.2} | | | | p99 <= {TARGET_CHANNELS_P99_MS} ms: {} |",
        channels.hits,
        args.unread_max,
        channels.p50(),
        channels.p99(),
        verdict(channels.p99() <= TARGET_CHANNELS_P99_MS)
    );
    println!(
        "| GET /api/channels | same, a user who has read nothing | | {:.2} | {:.2} | | | | (no target) |",
        unread_channels.p50(),
        unread_channels.p99(),
    );
    Ok(all_met)
}

/// `count` GETs from `concurrency` workers; (p50 ms, p99 ms, the last answer).
async fn http_run(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, Value)> {
    let histogram = Histogram::new();
    let next = Arc::new(AtomicUsize::new(0));
    let last = std::sync::Mutex::new(Value::Null);
    let workers = (0..concurrency.max(1)).map(|_| {
        let (next, histogram, last) = (next.clone(), &histogram, &last);
        async move {
            loop {
                if next.fetch_add(1, Ordering::Relaxed) >= count {
                    return anyhow::Ok(());
                }
                let started = now_us();
                let response = client.get(url).bearer_auth(token).send().await?;
                ensure!(response.status() == 200, "{url}: {}", response.status());
                let body = response.bytes().await?;
                histogram.record(now_us() - started);
                *last.lock().expect("not poisoned") = serde_json::from_slice(&body)?;
            }
        }
    });
    for result in futures_util::future::join_all(workers).await {
        result?;
    }
    let last = last.into_inner().expect("not poisoned");
    Ok((
        ms(histogram.percentile(0.50)),
        ms(histogram.percentile(0.99)),
        last,
    ))
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Integer)]
    #[allow(dead_code)]
    id: i32,
}

/// The same search as `LIKE '%word%'`, `count` times from `concurrency` threads with their
/// own connections; (p50 ms, p99 ms, hits).
async fn like_run(
    instance: &Instance,
    word: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    let histogram = Arc::new(Histogram::new());
    let next = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let pattern = format!("%{word}%");
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (db, histogram, next, hits) = (
            instance.db.clone(),
            histogram.clone(),
            next.clone(),
            hits.clone(),
        );
        let (pattern, user_id) = (pattern.clone(), instance.user_id);
        workers.push(tokio::task::spawn_blocking(
            move || -> anyhow::Result<()> {
                let mut conn = db.connection()?;
                let conn: &mut AnyConnection = &mut conn;
                let sql = placeholders(
                    conn,
                    "SELECT m.id AS id FROM messages m \
                 JOIN channel_members cm ON cm.channel_id = m.channel_id \
                 WHERE cm.user_id = ? AND m.deleted_at IS NULL AND lower(m.content) LIKE ? \
                 ORDER BY m.id DESC LIMIT 20",
                );
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let started = now_us();
                    let rows: Vec<Id> =
                        chatserver::per_backend!(&mut *conn, |c| diesel::sql_query(&sql)
                            .bind::<Integer, _>(user_id)
                            .bind::<Text, _>(&pattern)
                            .load(c))?;
                    histogram.record(now_us() - started);
                    hits.store(rows.len(), Ordering::Relaxed);
                }
                Ok(())
            },
        ));
    }
    for worker in workers {
        worker.await??;
    }
    Ok((
        ms(histogram.percentile(0.50)),
        ms(histogram.percentile(0.99)),
        hits.load(Ordering::Relaxed),
    ))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helpers

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().build()?)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "POST {url}: {status} {text}");
    Ok(if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}

async fn drop_database(created: Option<(String, String)>) {
    let Some((server, name)) = created else {
        return;
    };
    // For looking at query plans afterwards.
    if std::env::var_os("BENCH_KEEP_DATABASE").is_some() {
        println!("kept the database {name} (BENCH_KEEP_DATABASE)");
        return;
    }
    let _ = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = diesel::PgConnection::establish(&server)?;
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        Ok(())
    })
    .await;
}
