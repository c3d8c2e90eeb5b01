//! SQLite's single writer, with group commit.
//!
//! SQLite lets one connection write at a time. With writes spread over the pool, the others
//! wait in SQLite's busy handler, which sleeps (1, 2, 5, 10 ms, ...) and polls: under a burst
//! of posts that sleeping, not the work, set the tail latency. Instead every write of this
//! process goes to one thread that owns one connection. It takes whatever writes are queued
//! (up to `MAX_BATCH`), runs each in its own savepoint inside one `BEGIN IMMEDIATE`
//! transaction, and commits once: the commit's WAL writes and the lock are paid per batch,
//! not per write. A write that fails rolls back to its savepoint and fails alone; a commit
//! that fails fails the whole batch. Results are handed back only after the commit, so a
//! caller that publishes an event after `Db::write` returns still publishes only what is
//! durable. Other processes (the `gc` command, an operator's shell) can still hold the
//! lock: each write has a deadline, `DATABASE_BUSY_TIMEOUT_MS` after it was queued, and
//! a batch waits for the lock only until its oldest write's deadline; a write past its
//! deadline is answered `503 database_unavailable` (with `Retry-After`) without running.
//! So a locked database answers every request within the documented timeout, however many
//! batches were queued behind the lock.
//!
//! With `synchronous = NORMAL` a WAL commit does not fsync; only checkpoints do. A second
//! thread checkpoints every second (`PASSIVE`: it never blocks the writer), and the writer
//! itself never does, so no write waits for the disk.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{self, ManageConnection};
use tokio::sync::{mpsc, oneshot};

use super::{AnyConnection, ConnectionManager};
use crate::error::AppError;

/// Writes committed together at most. Large enough to absorb a burst, small enough that
/// the first write of a batch does not wait long for the last.
const MAX_BATCH: usize = 64;
/// Writes waiting for the writer at most; callers beyond it wait to enqueue.
const QUEUE: usize = 1024;
/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// A queued write. Given the batch's connection (or why there is none), it runs and leaves
/// behind what answers its caller once the batch has committed (or failed to).
type Work = Box<dyn FnOnce(Result<&mut AnyConnection, &str>) -> Settle + Send>;
type Settle = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// A queued write and when it must have been answered.
struct Job {
    deadline: Instant,
    work: Work,
}

impl Job {
    /// Answers the write with `why` without running it.
    fn refuse(self, why: &str) {
        (self.work)(Err(why))(Ok(()));
    }
}

/// The handle: cloneable; the thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    busy_timeout: Duration,
    /// Dropped with the last handle: the checkpointer stops.
    _checkpoints: std::sync::mpsc::Sender<()>,
}

impl Writer {
    /// Starts the writer thread and the checkpointer. Connections are opened on first use
    /// (and again after a failure), so a database that is away fails the writes, not the
    /// start.
    pub fn start(manager: ConnectionManager, busy_timeout: Duration) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer_manager = manager.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(writer_manager, queue))?;
        let (checkpoints, stop) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_every(CHECKPOINT_INTERVAL, manager, stop))?;
        Ok(Writer {
            jobs,
            busy_timeout,
            _checkpoints: checkpoints,
        })
    }

    /// Writes queued and not yet taken by the writer thread.
    pub fn queued(&self) -> usize {
        QUEUE - self.jobs.capacity()
    }

    /// Runs `work` in its own savepoint of the next batch; returns its result once the
    /// batch has committed.
    pub async fn write<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        // The caller's span (its request id) follows the work onto the writer's thread.
        let span = tracing::Span::current();
        let work: Work = Box::new(move |conn| {
            let _entered = span.enter();
            let result = match conn {
                Ok(conn) => diesel::Connection::transaction(conn, work),
                Err(e) => Err(unavailable(e)),
            };
            Box::new(move |committed| {
                let _ = answer
                    .send(result.and_then(|value| committed.map(|()| value).map_err(unavailable)));
            })
        });
        let stopped = || unavailable("the database writer stopped");
        let job = Job {
            deadline: Instant::now() + self.busy_timeout,
            work,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn unavailable(why: &str) -> AppError {
    AppError::DatabaseUnavailable(anyhow::anyhow!("writing to SQLite: {why}"))
}

fn run(manager: ConnectionManager, mut queue: mpsc::Receiver<Job>) {
    let mut conn: Option<AnyConnection> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
        let now = Instant::now();
        for late in batch.extract_if(.., |job| job.deadline <= now) {
            late.refuse("the database is locked by another process");
        }
        let Some(oldest_deadline) = batch.iter().map(|job| job.deadline).min() else {
            continue;
        };
        let connection = match open_if_closed(&mut conn, || open_writer(&manager)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the database writer cannot connect");
                refuse(&mut batch, &e.to_string());
                continue;
            }
        };
        // After a failed batch the connection may be mid-transaction or its transaction
        // state broken: drop it (closing rolls back) and open a new one for the next batch.
        // After a panic in a write, that batch's callers see the writer stopped.
        let lock_wait = oldest_deadline.saturating_duration_since(now);
        match catch_unwind(AssertUnwindSafe(|| {
            commit_batch(connection, &mut batch, lock_wait)
        })) {
            Ok(Committed::Yes) => {}
            Ok(Committed::No) => conn = None,
            Err(_) => {
                tracing::error!("a database write panicked; its batch was rolled back");
                batch.clear();
                conn = None;
            }
        }
    }
}

/// The connection in `slot`, opened with `open` if there is none (at first, or after a
/// failure dropped it).
fn open_if_closed(
    slot: &mut Option<AnyConnection>,
    open: impl FnOnce() -> Result<AnyConnection, r2d2::Error>,
) -> Result<&mut AnyConnection, r2d2::Error> {
    if slot.is_none() {
        *slot = Some(open()?);
    }
    Ok(slot.as_mut().expect("opened above"))
}

/// The writer's connection. It never checkpoints: SQLite would otherwise do it inside the
/// commit that fills the log past 1,000 pages, and that commit (and every write queued
/// behind it) would wait for the checkpoint's fsyncs. The checkpointer does it instead.
fn open_writer(manager: &ConnectionManager) -> Result<AnyConnection, r2d2::Error> {
    let mut conn = manager.connect()?;
    conn.batch_execute("PRAGMA wal_autocheckpoint = 0")
        .map_err(r2d2::Error::QueryError)?;
    Ok(conn)
}

/// Copies the log back into the database every `interval` with a passive checkpoint,
/// which never blocks the writer (nor readers), until `stop` is disconnected.
fn checkpoint_every(
    interval: Duration,
    manager: ConnectionManager,
    stop: std::sync::mpsc::Receiver<()>,
) {
    let mut conn: Option<AnyConnection> = None;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        let connection = match open_if_closed(&mut conn, || manager.connect()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the WAL checkpointer cannot connect");
                continue;
            }
        };
        if let Err(e) = connection.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!(error = %e, "checkpointing the WAL failed");
            conn = None;
        }
    }
}

enum Committed {
    Yes,
    No,
}

fn commit_batch(conn: &mut AnyConnection, batch: &mut Vec<Job>, lock_wait: Duration) -> Committed {
    let AnyConnection::Sqlite(sqlite) = conn else {
        unreachable!("the writer serves SQLite only");
    };
    // Wait for another process's lock no longer than the oldest write may still wait
    // (at least 1 ms: 0 would turn the busy handler off and fail at once).
    let wait_ms = lock_wait.as_millis().max(1);
    if let Err(e) = sqlite.batch_execute(&format!("PRAGMA busy_timeout = {wait_ms}")) {
        refuse(batch, &e.to_string());
        return Committed::No;
    }
    // IMMEDIATE: take the write lock now, so that a batch whose first write reads first
    // cannot fail on a snapshot another process has moved past.
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE") {
        refuse(batch, &e.to_string());
        return Committed::No;
    }
    let settles: Vec<Settle> = batch
        .drain(..)
        .map(|job| (job.work)(Ok(&mut *conn)))
        .collect();
    let AnyConnection::Sqlite(sqlite) = conn else {
        unreachable!("the writer serves SQLite only");
    };
    match AnsiTransactionManager::commit_transaction(sqlite) {
        Ok(()) => {
            settles.into_iter().for_each(|settle| settle(Ok(())));
            Committed::Yes
        }
        Err(e) => {
            tracing::error!(error = %e, "committing a batch of writes failed");
            let e = e.to_string();
            settles.into_iter().for_each(|settle| settle(Err(&e)));
            Committed::No
        }
    }
}

/// Answers every write of a batch that could not start.
fn refuse(batch: &mut Vec<Job>, why: &str) {
    batch.drain(..).for_each(|job| job.refuse(why));
}
