//! Integrity of the file store against the `file_uploads` table (`chatserver verify`).
//!
//! The rows and this deployment's objects are both read in the byte order of their keys, a
//! page at a time (keyset paging on the table, ListObjectsV2 or a sorted directory walk on the
//! store), and merged like two sorted files: memory holds a page of each, not the store.
//!
//! What is wrong (the report's `errors`, and a non-zero exit):
//! - `missing_objects`: a live (not deleted) row whose object is not in the store;
//! - `size_mismatches`: a live row whose `file_size` differs from its object's size;
//! - `orphans`: an object under this deployment's prefix with no row (deleted or not),
//!   older than `ORPHAN_MIN_AGE_SECONDS`;
//! - `hash_mismatches` (with `rehash`): a live row whose `sha256` differs from its object's
//!   bytes (objects whose size already differs are not read).
//!
//! What is not (the report's `info`):
//! - a deleted row whose object is gone: purged, as intended (`purged`);
//! - a deleted row whose object is still there: within `FILE_PURGE_AFTER_SECONDS` of its
//!   deletion that is the grace period (`awaiting_purge`); past it, the sweeper has not got
//!   to it yet (`pending_purge`, listed);
//! - an object with no row younger than `ORPHAN_MIN_AGE_SECONDS`: possibly an upload between
//!   storing and committing (`recent_unrecorded`, listed); the sweeper leaves those too;
//! - live rows without a recorded size or hash, which cannot be compared (`without_size`,
//!   `without_hash`).
//!
//! The store and the table change while this runs. Each would-be `missing_objects` is
//! checked again once the listing has passed its key (the row re-read, the object asked for
//! by key): an upload that committed after its key was listed, or a file deleted meanwhile,
//! is not reported. Each would-be orphan is checked against the table again likewise.
//!
//! Rows whose key lies outside this deployment's prefix (written before `STORE_KEY_PREFIX`
//! changed) are checked one by one (HEAD), since the listing covers only the prefix.

use std::collections::VecDeque;

use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::db::files::KeyedRow;
use crate::db::models::{now, rfc3339};
use crate::db::{self, Db};
use crate::error::AppError;
use crate::storage::{Listing, ObjectInfo, Store};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Read every live object and compare its SHA-256 with the row's.
    pub rehash: bool,
    /// Rows per database page and objects per listing page (S3 answers at most 1,000).
    pub page_size: usize,
    /// Entries listed per kind of finding; all are counted.
    pub max_listed: usize,
    /// Objects read at once with `rehash`.
    pub rehash_concurrency: usize,
    pub orphan_min_age: TimeDelta,
    pub purge_after: TimeDelta,
}

impl VerifyOptions {
    pub fn from_settings(settings: &Settings, rehash: bool) -> Self {
        VerifyOptions {
            rehash,
            page_size: 1000,
            max_listed: 1000,
            rehash_concurrency: 4,
            orphan_min_age: TimeDelta::seconds(settings.store.orphan_min_age_seconds),
            purge_after: TimeDelta::seconds(settings.store.file_purge_after_seconds),
        }
    }
}

/// How many of one kind of finding, and the first `max_listed` of them.
#[derive(Debug, Serialize)]
pub struct Findings<T> {
    pub count: u64,
    pub items: Vec<T>,
}

impl<T> Default for Findings<T> {
    fn default() -> Self {
        Findings {
            count: 0,
            items: Vec::new(),
        }
    }
}

impl<T> Findings<T> {
    fn add(&mut self, item: T, max_listed: usize) {
        self.count += 1;
        if self.items.len() < max_listed {
            self.items.push(item);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RowFinding {
    pub id: i32,
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeMismatch {
    pub id: i32,
    pub key: String,
    /// The row's `file_size`.
    pub expected: i64,
    /// The object's.
    pub actual: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HashMismatch {
    pub id: i32,
    pub key: String,
    /// The row's `sha256`.
    pub expected: String,
    /// Of the object's bytes.
    pub actual: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectFinding {
    pub key: String,
    pub size: u64,
    #[serde(with = "rfc3339::option")]
    pub last_modified: Option<NaiveDateTime>,
}

#[derive(Debug, Default, Serialize)]
pub struct Checked {
    /// Rows read (deleted or not).
    pub rows: u64,
    /// Of them, rows whose key lies outside this deployment's prefix (checked one by one).
    pub rows_outside_prefix: u64,
    /// Objects listed under the prefix, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Objects read and hashed (`rehash`).
    pub rehashed: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Errors {
    pub missing_objects: Findings<RowFinding>,
    pub size_mismatches: Findings<SizeMismatch>,
    pub hash_mismatches: Findings<HashMismatch>,
    pub orphans: Findings<ObjectFinding>,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.missing_objects.count
            + self.size_mismatches.count
            + self.hash_mismatches.count
            + self.orphans.count
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Info {
    /// Deleted rows whose object is gone.
    pub purged: u64,
    /// Deleted rows whose object is kept, within the purge grace period.
    pub awaiting_purge: u64,
    /// Deleted rows whose object is still there past the grace period.
    pub pending_purge: Findings<RowFinding>,
    /// Objects with no row, younger than `ORPHAN_MIN_AGE_SECONDS`.
    pub recent_unrecorded: Findings<ObjectFinding>,
    /// Live rows with no `file_size` (not compared).
    pub without_size: u64,
    /// With `rehash`: live rows with no `sha256` (not read).
    pub without_hash: u64,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// No errors.
    pub ok: bool,
    /// `s3` or `local`, and the bucket or directory.
    pub store: &'static str,
    pub location: String,
    /// This deployment's prefix: only objects under it are listed.
    pub prefix: String,
    pub rehash: bool,
    #[serde(with = "rfc3339")]
    pub started_at: NaiveDateTime,
    pub checked: Checked,
    pub errors: Errors,
    pub info: Info,
}

/// Compares the store with the table; see the module's documentation. Fails only when the
/// database or the store does (or the listing is not in key order); inconsistencies are
/// the report's.
pub async fn verify(
    db: &Db,
    store: &Store,
    options: &VerifyOptions,
) -> Result<VerifyReport, AppError> {
    let started_at = now();
    let prefix = store.owned_prefix();
    let mut run = Run {
        db,
        store,
        options,
        started_at,
        hashing: JoinSet::new(),
        report: VerifyReport {
            ok: false,
            store: store.kind(),
            location: store.location(),
            prefix: prefix.clone(),
            rehash: options.rehash,
            started_at,
            checked: Checked::default(),
            errors: Errors::default(),
            info: Info::default(),
        },
    };
    let mut rows = RowPages::new(db.clone(), options.page_size);
    let mut objects = ObjectPages::new(store.list_sorted(&prefix, options.page_size));
    let mut row = rows.next().await?;
    let mut object = objects.next().await?;
    loop {
        // Keys outside the prefix sort wholly before or after it: checked on their own,
        // they do not disturb the merge.
        if let Some(r) = row.take_if(|r| !r.s3_key.starts_with(&prefix)) {
            run.report.checked.rows += 1;
            run.report.checked.rows_outside_prefix += 1;
            let found = store.head(&r.s3_key).await?.map(|size| ObjectInfo {
                key: r.s3_key.clone(),
                size,
                last_modified: None,
            });
            run.pair(r, found).await?;
            row = rows.next().await?;
            continue;
        }
        let next = match (&row, &object) {
            (None, None) => break,
            (Some(r), Some(o)) if r.s3_key == o.key => Next::Both,
            (Some(r), Some(o)) if r.s3_key < o.key => Next::Row,
            (Some(_), None) => Next::Row,
            _ => Next::Object,
        };
        if matches!(next, Next::Both | Next::Object) {
            run.count_object(object.as_ref().expect("an object"));
        }
        match next {
            Next::Both => {
                run.report.checked.rows += 1;
                run.pair(row.take().expect("a row"), object.take()).await?;
                row = rows.next().await?;
                object = objects.next().await?;
            }
            Next::Row => {
                run.report.checked.rows += 1;
                run.pair(row.take().expect("a row"), None).await?;
                row = rows.next().await?;
            }
            Next::Object => {
                run.unrecorded(object.take().expect("an object")).await?;
                object = objects.next().await?;
            }
        }
    }
    while let Some(done) = run.hashing.join_next().await {
        run.hashed(done).await?;
    }
    let mut report = run.report;
    report.ok = report.errors.total() == 0;
    if !report.ok {
        tracing::error!(
            missing_objects = report.errors.missing_objects.count,
            size_mismatches = report.errors.size_mismatches.count,
            hash_mismatches = report.errors.hash_mismatches.count,
            orphans = report.errors.orphans.count,
            "the store and the database disagree"
        );
    }
    Ok(report)
}

/// Which side of the merge comes next: the smaller key, or both when they are equal.
enum Next {
    Both,
    Row,
    Object,
}

/// The row, the object it names and what the hash of that object turned out to be.
type Hashed = (KeyedRow, Result<Option<(u64, String)>, AppError>);

struct Run<'a> {
    db: &'a Db,
    store: &'a Store,
    options: &'a VerifyOptions,
    started_at: NaiveDateTime,
    hashing: JoinSet<Hashed>,
    report: VerifyReport,
}

impl Run<'_> {
    fn count_object(&mut self, object: &ObjectInfo) {
        self.report.checked.objects += 1;
        self.report.checked.bytes += object.size;
    }

    /// A row and its object, if the listing had it.
    async fn pair(&mut self, row: KeyedRow, object: Option<ObjectInfo>) -> Result<(), AppError> {
        let max = self.options.max_listed;
        let info = &mut self.report.info;
        if row.is_deleted {
            match object {
                None => info.purged += 1,
                Some(_) => {
                    let due = row
                        .deleted_at
                        .is_none_or(|t| t + self.options.purge_after <= self.started_at);
                    if due {
                        info.pending_purge.add(finding(&row), max);
                    } else {
                        info.awaiting_purge += 1;
                    }
                }
            }
            return Ok(());
        }
        let Some(object) = object else {
            return self.missing(row).await;
        };
        let Some(expected) = row.file_size else {
            info.without_size += 1;
            return self.rehash(row).await;
        };
        if expected < 0 || expected as u64 != object.size {
            self.report.errors.size_mismatches.add(
                SizeMismatch {
                    id: row.id,
                    key: row.s3_key,
                    expected,
                    actual: object.size,
                },
                max,
            );
            return Ok(());
        }
        self.rehash(row).await
    }

    /// A live row the listing did not have: gone, unless it was stored after its key was
    /// listed, or the row was deleted (or removed) since it was read.
    async fn missing(&mut self, row: KeyedRow) -> Result<(), AppError> {
        let key = row.s3_key.clone();
        let now = self
            .db
            .run(move |conn| Ok(db::files::row_of_key(conn, &key)?))
            .await?;
        let Some(now) = now else {
            return Ok(()); // the row is gone: nothing to check
        };
        match self.store.head(&now.s3_key).await? {
            None if now.is_deleted => {
                self.report.info.purged += 1;
                Ok(())
            }
            None => {
                let found = finding(&now);
                self.report
                    .errors
                    .missing_objects
                    .add(found, self.options.max_listed);
                Ok(())
            }
            Some(size) => {
                let object = ObjectInfo {
                    key: now.s3_key.clone(),
                    size,
                    last_modified: None,
                };
                Box::pin(self.pair(now, Some(object))).await
            }
        }
    }

    /// An object with no row in the listing's page: young, an orphan, or one whose row
    /// committed after the page was read.
    async fn unrecorded(&mut self, object: ObjectInfo) -> Result<(), AppError> {
        let max = self.options.max_listed;
        let young = object
            .last_modified
            .is_none_or(|t| t > self.started_at - self.options.orphan_min_age);
        if young {
            self.report
                .info
                .recent_unrecorded
                .add(object_finding(&object), max);
            return Ok(());
        }
        let key = object.key.clone();
        let row = self
            .db
            .run(move |conn| Ok(db::files::row_of_key(conn, &key)?))
            .await?;
        match row {
            Some(row) => {
                self.report.checked.rows += 1;
                self.pair(row, Some(object)).await
            }
            None => {
                // A live direct upload's object has its session, not yet a row.
                let key = object.key.clone();
                let live = self
                    .db
                    .run(move |conn| Ok(db::uploads::live(conn)?.keys.contains(&key)))
                    .await?;
                if live {
                    self.report
                        .info
                        .recent_unrecorded
                        .add(object_finding(&object), max);
                } else {
                    self.report.errors.orphans.add(object_finding(&object), max);
                }
                Ok(())
            }
        }
    }

    /// With `rehash`, reads the object of a live row whose size matched, a few at a time.
    async fn rehash(&mut self, row: KeyedRow) -> Result<(), AppError> {
        if !self.options.rehash {
            return Ok(());
        }
        if row.sha256.is_none() {
            self.report.info.without_hash += 1;
            return Ok(());
        }
        while self.hashing.len() >= self.options.rehash_concurrency.max(1) {
            let done = self.hashing.join_next().await.expect("tasks in the set");
            self.hashed(done).await?;
        }
        let store = self.store.clone();
        self.hashing.spawn(async move {
            let hashed = store.sha256(&row.s3_key).await;
            (row, hashed)
        });
        Ok(())
    }

    async fn hashed(
        &mut self,
        done: Result<Hashed, tokio::task::JoinError>,
    ) -> Result<(), AppError> {
        let (row, hashed) = done.map_err(|e| AppError::Internal(e.into()))?;
        let Some((_, actual)) = hashed? else {
            // Gone since it was listed: deleted and purged meanwhile, or missing.
            return self.missing(row).await;
        };
        self.report.checked.rehashed += 1;
        let expected = row.sha256.clone().unwrap_or_default();
        if !expected.eq_ignore_ascii_case(&actual) {
            self.report.errors.hash_mismatches.add(
                HashMismatch {
                    id: row.id,
                    key: row.s3_key,
                    expected,
                    actual,
                },
                self.options.max_listed,
            );
        }
        Ok(())
    }
}

fn finding(row: &KeyedRow) -> RowFinding {
    RowFinding {
        id: row.id,
        key: row.s3_key.clone(),
    }
}

fn object_finding(object: &ObjectInfo) -> ObjectFinding {
    ObjectFinding {
        key: object.key.clone(),
        size: object.size,
        last_modified: object.last_modified,
    }
}

fn out_of_order(what: &str, previous: &str, key: &str) -> AppError {
    AppError::Internal(anyhow::anyhow!(
        "the {what} is not in key order ({key:?} came after {previous:?}): cannot verify"
    ))
}

/// The table's rows in key order, a page at a time.
struct RowPages {
    db: Db,
    page_size: usize,
    after: String,
    page: std::vec::IntoIter<KeyedRow>,
    done: bool,
}

impl RowPages {
    fn new(db: Db, page_size: usize) -> Self {
        RowPages {
            db,
            page_size: page_size.max(1),
            after: String::new(),
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<KeyedRow>, AppError> {
        if let Some(row) = self.page.next() {
            return Ok(Some(row));
        }
        if self.done {
            return Ok(None);
        }
        let (after, limit) = (self.after.clone(), self.page_size as i64);
        let rows = self
            .db
            .run(move |conn| Ok(db::files::rows_after(conn, &after, limit)?))
            .await?;
        self.done = rows.len() < self.page_size;
        let mut previous = self.after.as_str();
        for row in &rows {
            if row.s3_key.as_str() <= previous {
                return Err(out_of_order("table", previous, &row.s3_key));
            }
            previous = &row.s3_key;
        }
        if let Some(last) = rows.last() {
            self.after = last.s3_key.clone();
        }
        self.page = rows.into_iter();
        Ok(self.page.next())
    }
}

/// The store's objects in key order, a page at a time; a listing out of order is an error,
/// not a silently wrong report.
struct ObjectPages {
    listing: Listing,
    page: VecDeque<ObjectInfo>,
    last: Option<String>,
    done: bool,
}

impl ObjectPages {
    fn new(listing: Listing) -> Self {
        ObjectPages {
            listing,
            page: VecDeque::new(),
            last: None,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<ObjectInfo>, AppError> {
        while self.page.is_empty() && !self.done {
            match self.listing.next_page().await? {
                // Thumbnails belong to their file's row (`thumbnail_key`), not to a row of
                // their own: the sweeper keeps them in step with it.
                Some(page) => {
                    self.page = page
                        .into_iter()
                        .filter(|o| !crate::media::is_thumbnail_key(&o.key))
                        .collect()
                }
                None => self.done = true,
            }
        }
        let Some(object) = self.page.pop_front() else {
            return Ok(None);
        };
        if let Some(last) = &self.last
            && object.key.as_str() <= last.as_str()
        {
            return Err(out_of_order("store's listing", last, &object.key));
        }
        self.last = Some(object.key.clone());
        Ok(Some(object))
    }
}
