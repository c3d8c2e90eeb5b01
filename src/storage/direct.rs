//! Direct uploads through the store: what `crate::direct` needs of S3 or the local disk.

use std::time::Duration;

use bytes::Bytes;

use super::{Backend, Body, Presentation, Store};
use crate::error::AppError;

/// A part as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    pub part_number: i32,
    pub size: u64,
    pub etag: String,
}

/// Where a direct upload's bytes are: the object key, the S3 multipart upload (if any) and
/// the session (whose id names the local store's parts).
#[derive(Debug, Clone, Copy)]
pub struct DirectTarget<'a> {
    pub key: &'a str,
    pub upload_id: Option<&'a str>,
    pub session_id: &'a str,
}

impl Store {
    /// Where direct uploads' objects are put, and stay (the file row points at them): the
    /// deployment's `uploads/` prefix, which the bucket's lifecycle rule covers.
    pub fn staging_prefix(&self) -> String {
        format!("{}/uploads/", self.key_prefix)
    }

    /// A new direct upload's object key: the staging prefix, the date and a UUID. Nothing
    /// in it comes from the client (the type is only known once the bytes are checked; the
    /// row carries it).
    pub fn new_staging_key(&self) -> String {
        let today = chrono::Utc::now().format("%Y/%m/%d");
        format!(
            "{}{today}/{}",
            self.staging_prefix(),
            uuid::Uuid::new_v4().simple()
        )
    }

    /// Starts a direct upload; the S3 multipart upload id when one is used.
    pub async fn direct_begin(
        &self,
        key: &str,
        part_count: i32,
        presentation: &Presentation,
    ) -> Result<Option<String>, AppError> {
        match &self.backend {
            Backend::S3(s) => {
                self.measured(
                    "direct_begin",
                    s.direct_begin(key, part_count, presentation),
                )
                .await
            }
            Backend::Local(_) => Ok(None),
        }
    }

    /// A presigned URL for a part (S3), or `None` when the server takes the part itself
    /// (local: the caller makes a signed URL to its own route).
    pub async fn direct_part_url(
        &self,
        target: DirectTarget<'_>,
        part_number: i32,
        lifetime: Duration,
    ) -> Result<Option<String>, AppError> {
        match &self.backend {
            Backend::S3(s) => self
                .measured(
                    "presign",
                    s.direct_part_url(target.key, target.upload_id, part_number, lifetime),
                )
                .await
                .map(Some),
            Backend::Local(_) => Ok(None),
        }
    }

    /// The parts stored so far, by number.
    pub async fn direct_parts(
        &self,
        target: DirectTarget<'_>,
    ) -> Result<Vec<StoredPart>, AppError> {
        self.measured("list_parts", async {
            match &self.backend {
                Backend::S3(s) => s.direct_parts(target.key, target.upload_id).await,
                Backend::Local(l) => l.direct_parts(target.session_id).await,
            }
        })
        .await
    }

    /// Makes the object from its parts (`CompleteMultipartUpload`, or joining the local
    /// parts).
    pub async fn direct_finish(
        &self,
        target: DirectTarget<'_>,
        parts: &[StoredPart],
    ) -> Result<(), AppError> {
        self.measured("direct_finish", async {
            match &self.backend {
                Backend::S3(s) => s.direct_finish(target.key, target.upload_id, parts).await,
                Backend::Local(l) => l.direct_finish(target.session_id, target.key, parts).await,
            }
        })
        .await
    }

    /// Removes whatever a direct upload stored: its parts, its multipart upload, its object.
    pub async fn direct_abort(&self, target: DirectTarget<'_>) -> Result<(), AppError> {
        self.measured("direct_abort", async {
            match &self.backend {
                Backend::S3(s) => s.direct_abort(target.key, target.upload_id).await,
                Backend::Local(l) => l.direct_abort(target.session_id, target.key).await,
            }
        })
        .await
    }

    /// The local store's part route: streams one part to disk (see
    /// `LocalStore::direct_put_part`). S3 never comes here.
    pub async fn direct_put_part(
        &self,
        session_id: &str,
        part_number: i32,
        limit: u64,
        body: &mut dyn Body,
    ) -> Result<(u64, String), AppError> {
        match &self.backend {
            Backend::Local(l) => {
                self.measured(
                    "put_part",
                    l.direct_put_part(session_id, part_number, limit, body),
                )
                .await
            }
            Backend::S3(_) => Err(AppError::NotFound),
        }
    }

    /// Up to `limit` first bytes of an object (S3: a ranged GET); `None` when absent.
    pub async fn read_head(&self, key: &str, limit: usize) -> Result<Option<Bytes>, AppError> {
        self.measured("get", async {
            match &self.backend {
                Backend::S3(s) => s.read_head(key, limit).await,
                Backend::Local(l) => l.read_head(key, limit).await,
            }
        })
        .await
    }

    /// At start, S3 only: the lifecycle rule on the staging prefix and, with
    /// `AWS_S3_CORS_ORIGINS`, the bucket's CORS rule (see `S3Store::apply_bucket_rules`).
    pub async fn apply_bucket_rules(&self, abort_after_days: i32, cors_origins: &[String]) {
        if let Backend::S3(s) = &self.backend {
            s.apply_bucket_rules(&self.staging_prefix(), abort_after_days, cors_origins)
                .await;
        }
    }
}
