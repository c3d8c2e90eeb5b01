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
//! durable. Other processes (the `gc` command, an operator's shell) still meet the busy
//! timeout, as before.

use std::panic::{AssertUnwindSafe, catch_unwind};

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::r2d2::ManageConnection;
use tokio::sync::{mpsc, oneshot};

use super::{AnyConnection, ConnectionManager};
use crate::error::AppError;

/// Writes committed together at most. Large enough to absorb a burst, small enough that
/// the first write of a batch does not wait long for the last.
const MAX_BATCH: usize = 64;
/// Writes waiting for the writer at most; callers beyond it wait to enqueue.
const QUEUE: usize = 1024;

/// A queued write. Given the batch's connection (or why there is none), it runs and leaves
/// behind what answers its caller once the batch has committed (or failed to).
type Job = Box<dyn FnOnce(Result<&mut AnyConnection, &str>) -> Settle + Send>;
type Settle = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// The handle: cloneable; the thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread. Its connection is opened on first use (and again after a
    /// failure), so a database that is away fails the writes, not the start.
    pub fn start(manager: ConnectionManager) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(manager, queue))?;
        Ok(Writer { jobs })
    }

    /// Runs `work` in its own savepoint of the next batch; returns its result once the
    /// batch has committed.
    pub async fn write<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
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
        let connection = match conn.as_mut() {
            Some(c) => c,
            None => match manager.connect() {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::error!(error = %e, "the database writer cannot connect");
                    refuse(&mut batch, &e.to_string());
                    continue;
                }
            },
        };
        // After a failed batch the connection may be mid-transaction or its transaction
        // state broken: drop it (closing rolls back) and open a new one for the next batch.
        // After a panic in a write, that batch's callers see the writer stopped.
        match catch_unwind(AssertUnwindSafe(|| commit_batch(connection, &mut batch))) {
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

enum Committed {
    Yes,
    No,
}

fn commit_batch(conn: &mut AnyConnection, batch: &mut Vec<Job>) -> Committed {
    let AnyConnection::Sqlite(sqlite) = conn else {
        unreachable!("the writer serves SQLite only");
    };
    // IMMEDIATE: take the write lock now, so that a batch whose first write reads first
    // cannot fail on a snapshot another process has moved past.
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE") {
        refuse(batch, &e.to_string());
        return Committed::No;
    }
    let settles: Vec<Settle> = batch.drain(..).map(|job| job(Ok(&mut *conn))).collect();
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
    for job in batch.drain(..) {
        job(Err(why))(Ok(()));
    }
}
