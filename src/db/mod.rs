//! The database: one code path over PostgreSQL and SQLite through diesel's `MultiConnection`.
//!
//! The backend is chosen from the `DATABASE_URL` scheme here, not by trying each backend in
//! turn, so a typo in a PostgreSQL URL is an error instead of a new empty SQLite file.

pub mod channel_files;
pub mod channels;
pub mod deployment;
pub mod files;
pub mod idempotency;
pub mod media_jobs;
pub mod mentions;
pub mod messages;
pub mod models;
pub mod quota;
pub mod reactions;
pub mod reads;
pub mod schema;
pub mod search;
pub mod uploads;
pub mod users;
mod writer;

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseTarget;
use crate::error::AppError;
use crate::metrics::{Metrics, PoolState};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Runs `$body` with `$c` bound to the concrete connection, for SQL that the
/// `MultiConnection` cannot express generically (for example `RETURNING` with `Selectable`).
#[macro_export]
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::AnyConnection::Postgresql($c) => $body,
            $crate::db::AnyConnection::Sqlite($c) => $body,
        }
    };
}

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// How long a SQLite write waits for a lock held by another process (an operator's shell,
/// the `gc` command) before it is answered `503 database_unavailable`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections of the backend named by the URL scheme, with SQLite tuned for a pool.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    target: DatabaseTarget,
    busy_timeout: Duration,
}

impl ManageConnection for ConnectionManager {
    type Connection = AnyConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, r2d2::Error> {
        match &self.target {
            DatabaseTarget::Postgres(url) => diesel::PgConnection::establish(url)
                .map(AnyConnection::Postgresql)
                .map_err(r2d2::Error::ConnectionError),
            DatabaseTarget::Sqlite(path) => {
                let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the writer; the busy timeout makes writers
                // queue instead of failing with "database is locked".
                // busy_timeout first: switching to WAL itself needs the lock.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    self.busy_timeout.as_millis()
                ))
                .map_err(r2d2::Error::QueryError)?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    /// A connection dropped mid-transaction (a panic) or whose server went away is not
    /// handed out again; as diesel's own manager does.
    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        use diesel::r2d2::R2D2Connection;
        std::thread::panicking()
            || match conn {
                AnyConnection::Postgresql(c) => c.is_broken(),
                AnyConnection::Sqlite(c) => c.is_broken(),
            }
    }
}

pub type Pool = r2d2::Pool<ConnectionManager>;

/// The pool plus a way to run queries off the async threads. Writes go through
/// [`Db::write`]: on SQLite to the one writer thread (see `writer.rs`), on PostgreSQL to
/// the pool like everything else.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    writer: Option<writer::Writer>,
    backend: &'static str,
    metrics: Metrics,
}

impl Db {
    pub fn connect(target: &DatabaseTarget) -> anyhow::Result<Db> {
        Db::connect_with(target, DEFAULT_BUSY_TIMEOUT)
    }

    /// `connect`, with SQLite writes waiting at most `busy_timeout` for another process's
    /// lock (`DATABASE_BUSY_TIMEOUT_MS`).
    pub fn connect_with(target: &DatabaseTarget, busy_timeout: Duration) -> anyhow::Result<Db> {
        if let DatabaseTarget::Sqlite(path) = target
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the database directory {}", dir.display()))?;
        }
        let max_size = match target {
            DatabaseTarget::Postgres(_) => 16,
            DatabaseTarget::Sqlite(_) => 8,
        };
        let manager = ConnectionManager {
            target: target.clone(),
            busy_timeout,
        };
        let pool = r2d2::Pool::builder()
            .max_size(max_size)
            .connection_timeout(Duration::from_secs(5))
            .test_on_check_out(false)
            .build(manager.clone())
            .with_context(|| format!("connecting to the {} database", target.backend_name()))?;
        let writer = match target {
            DatabaseTarget::Postgres(_) => None,
            DatabaseTarget::Sqlite(_) => Some(
                writer::Writer::start(manager, busy_timeout)
                    .context("starting the SQLite writer")?,
            ),
        };
        Ok(Db {
            pool,
            writer,
            backend: target.backend_name(),
            metrics: Metrics::new(),
        })
    }

    /// Counts this handle's work (and its clones') in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: Metrics) -> Db {
        self.metrics = metrics;
        self
    }

    /// The pool as of now, for the metrics.
    pub fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            connections: state.connections,
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// SQLite: writes waiting for the writer thread (not counting the batch it is running).
    /// `None` on PostgreSQL, where writes do not queue.
    pub fn queued_writes(&self) -> Option<usize> {
        self.writer.as_ref().map(writer::Writer::queued)
    }

    /// Runs `work` with a pooled connection on the blocking thread pool.
    pub async fn run<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        let result = self.on_pool(work).await;
        self.metrics.db_call("read", started, &result);
        result
    }

    async fn on_pool<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        // The caller's span (its request id) follows the work onto the blocking thread.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("database task failed: {e}")))?
    }

    /// Runs `work` as one transaction that writes: all of it commits or none of it does.
    /// The result comes back after the commit, so events announced after this returns are
    /// durable.
    pub async fn write<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        let result = match &self.writer {
            Some(writer) => writer.write(work).await,
            None => self.on_pool(move |conn| conn.transaction(work)).await,
        };
        self.metrics.db_call("write", started, &result);
        result
    }

    /// A pooled connection, for commands that run outside the server (no writer thread
    /// involved: nothing else writes then).
    pub fn connection(&self) -> anyhow::Result<r2d2::PooledConnection<ConnectionManager>> {
        self.pool.get().context("getting a database connection")
    }

    /// Applies pending migrations; returns how many ran.
    pub fn migrate(&self) -> anyhow::Result<usize> {
        let mut conn = self.connection()?;
        let applied = match &mut *conn {
            AnyConnection::Postgresql(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
            AnyConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
        }
        .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
        Ok(applied.len())
    }

    /// The readiness probe: one round trip.
    pub async fn ping(&self) -> Result<(), AppError> {
        self.run(|conn| {
            conn.batch_execute("SELECT 1")?;
            Ok(())
        })
        .await
    }
}

/// Raw SQL written with `?` placeholders, as the connection's backend wants it: PostgreSQL
/// numbers them (`$1`, `$2`, ...). For `diesel::sql_query`, whose text is sent as is. The
/// SQL must have no `?` other than placeholders (user input is only ever bound).
pub fn placeholders(conn: &AnyConnection, sql: &str) -> String {
    match conn {
        AnyConnection::Sqlite(_) => sql.to_owned(),
        AnyConnection::Postgresql(_) => {
            let mut out = String::with_capacity(sql.len() + 16);
            let mut n = 0;
            for ch in sql.chars() {
                if ch == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(ch);
                }
            }
            out
        }
    }
}

/// Takes the next `count` numbers of the channel's event sequence and returns the first.
///
/// Call first inside the `Db::write` that makes the change (for a new channel, once it
/// exists). The update locks the row until commit (SQLite serialises all writers anyway),
/// which also makes message ids in a channel commit in id order: PostgreSQL hands out
/// SERIAL ids at insert time, so without the lock a client paging with `after=` could skip
/// a message committed late.
pub fn allocate_event_seq(
    conn: &mut AnyConnection,
    channel_id: i32,
    count: i64,
) -> QueryResult<i64> {
    let query = AdvanceEventSeq { channel_id, count };
    let last: i64 = crate::per_backend!(conn, |c| query.get_result(c))?;
    Ok(last - count + 1)
}

/// `UPDATE channels SET event_seq = event_seq + count WHERE id = channel_id RETURNING
/// event_seq`, written out because diesel never caches a prepared `UPDATE` (its SET list
/// could vary), and this one runs in every write that announces an event: as its own
/// fixed-SQL query it is prepared once per connection.
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
struct AdvanceEventSeq {
    channel_id: i32,
    count: i64,
}

impl<DB> diesel::query_builder::QueryFragment<DB> for AdvanceEventSeq
where
    DB: diesel::backend::Backend,
    i32: diesel::serialize::ToSql<diesel::sql_types::Integer, DB>,
    i64: diesel::serialize::ToSql<diesel::sql_types::BigInt, DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        // Names from schema.rs (`channels`, `event_seq`, `id`).
        out.push_sql("UPDATE channels SET event_seq = event_seq + ");
        out.push_bind_param::<diesel::sql_types::BigInt, _>(&self.count)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<diesel::sql_types::Integer, _>(&self.channel_id)?;
        out.push_sql(" RETURNING event_seq");
        Ok(())
    }
}

impl diesel::query_builder::Query for AdvanceEventSeq {
    type SqlType = diesel::sql_types::BigInt;
}

impl<C> RunQueryDsl<C> for AdvanceEventSeq {}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written on the blocking pool and on the SQLite writer's thread carry the
    /// span (the request id) of the caller.
    #[tokio::test]
    async fn the_callers_span_follows_work_to_other_threads() {
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        // Global: the writer's thread does not see a thread-local default.
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DatabaseTarget::Sqlite(dir.path().join("t.db"))).unwrap();
        let span = tracing::info_span!("request", request_id = "req-7");
        let work = async {
            db.run(|_| {
                tracing::info!("read on the pool");
                Ok(())
            })
            .await?;
            db.write(|_| {
                tracing::info!("written by the writer");
                Ok(())
            })
            .await
        };
        tracing::Instrument::instrument(work, span).await.unwrap();

        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for message in ["read on the pool", "written by the writer"] {
            let line = logs.lines().find(|l| l.contains(message)).expect(message);
            assert!(line.contains("req-7"), "no request id in {line:?}");
        }
    }
}
