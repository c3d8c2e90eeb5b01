//! Search against `LIKE '%word%'` over the same data, on SQLite (a temporary file) or on
//! PostgreSQL (`DATABASE_URL=postgres://...`, a database of its own: it is filled).
//!
//! `cargo run --release --example bench_search -- [messages]` (default 100000): messages
//! over 100 channels, words from a list with some Chinese; one user in every channel.
//! Prints p50/p99 of 50 searches (limit 20) for a common word, a rare word and a prefix,
//! each beside the same query as `LIKE '%word%' ORDER BY id DESC LIMIT 20`.

use std::time::{Duration, Instant};

use chatserver::config::DatabaseTarget;
use chatserver::db::search::{self, SearchRequest};
use chatserver::db::{AnyConnection, Db, placeholders};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use rand::{Rng, SeedableRng};

const WORDS: &[&str] = &[
    "the",
    "meeting",
    "report",
    "deploy",
    "release",
    "coffee",
    "lunch",
    "budget",
    "review",
    "server",
    "client",
    "design",
    "roadmap",
    "ticket",
    "incident",
    "customer",
    "weekly",
    "planning",
    "database",
    "network",
    "会議室",
    "项目计划",
    "明日",
    "打ち合わせ",
    "讨论",
];

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Integer)]
    #[allow(dead_code)]
    id: i32,
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let target = match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => DatabaseTarget::Postgres(url),
        _ => DatabaseTarget::Sqlite(dir.path().join("bench.db")),
    };
    let db = Db::connect(&target)?;
    db.migrate()?;
    let mut conn = db.connection()?;
    let conn: &mut AnyConnection = &mut conn;
    conn.batch_execute(
        "INSERT INTO users (id, username, display_name, password_hash, created_at) \
         VALUES (1, 'bench', 'bench', 'x', CURRENT_TIMESTAMP)",
    )?;
    for c in 1..=100 {
        conn.batch_execute(&format!(
            "INSERT INTO channels (id, name, is_private, created_by, created_at) \
             VALUES ({c}, 'c{c}', FALSE, 1, CURRENT_TIMESTAMP); \
             INSERT INTO channel_members (channel_id, user_id, role, joined_at) \
             VALUES ({c}, 1, 'member', CURRENT_TIMESTAMP);"
        ))?;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut batch = String::new();
    for i in 0..count {
        let mut words: Vec<&str> = (0..8)
            .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
            .collect();
        if i % 5000 == 0 {
            words.push("zanzibar");
        }
        let channel = rng.gen_range(1..=100);
        batch.push_str(&format!(
            "({channel}, 1, '{}', CURRENT_TIMESTAMP),",
            words.join(" ")
        ));
        if i % 1000 == 999 || i + 1 == count {
            batch.pop();
            conn.batch_execute(&format!(
                "BEGIN; INSERT INTO messages (channel_id, user_id, content, created_at) VALUES {batch}; COMMIT;"
            ))?;
            batch.clear();
        }
    }
    conn.batch_execute("ANALYZE")?;
    println!(
        "{} backend, {count} messages over 100 channels, loaded in {:?}",
        db.backend(),
        started.elapsed()
    );
    let like_sql = placeholders(
        conn,
        "SELECT m.id AS id FROM messages m JOIN channel_members cm ON cm.channel_id = m.channel_id \
         WHERE cm.user_id = 1 AND m.deleted_at IS NULL AND lower(m.content) LIKE ? \
         ORDER BY m.id DESC LIMIT 20",
    );
    for (label, q) in [
        ("common word", "meeting"),
        ("rare word", "zanzibar"),
        ("prefix", "deplo"),
        ("CJK run", "会議室"),
    ] {
        let request = SearchRequest {
            user_id: 1,
            terms: search::terms(q),
            channel_id: None,
            before: None,
            limit: 20,
        };
        let mut searched = Vec::new();
        let mut hits = 0;
        for _ in 0..50 {
            let t = Instant::now();
            let page = search::search(conn, &request)?;
            searched.push(t.elapsed());
            hits = page.messages.len();
        }
        let mut liked = Vec::new();
        let pattern = format!("%{q}%");
        for _ in 0..50 {
            let t = Instant::now();
            let rows: Vec<Id> =
                chatserver::per_backend!(&mut *conn, |c| diesel::sql_query(&like_sql)
                    .bind::<Text, _>(&pattern)
                    .load(c))?;
            liked.push(t.elapsed());
            assert!(rows.len() <= 20);
        }
        let (s50, s99) = percentiles(searched);
        let (l50, l99) = percentiles(liked);
        println!(
            "{label:12} {q:10} search p50 {s50:>10.2?} p99 {s99:>10.2?} ({hits} hits) | LIKE p50 {l50:>10.2?} p99 {l99:>10.2?}"
        );
    }
    Ok(())
}
