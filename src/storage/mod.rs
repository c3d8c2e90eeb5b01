//! The file store: S3 (or any S3-compatible server) or a local directory, behind one interface.
//!
//! Both take an object as a stream of chunks and either store all of it or nothing: a body
//! that fails midway (too large, wrong type, client gone) or a store that fails midway leaves
//! no object behind, and neither ever holds a whole file in memory.

mod local;
mod s3;

use std::path::PathBuf;

use bytes::Bytes;
use chrono::NaiveDateTime;
use futures_util::Stream;

pub use local::LocalStore;
pub use s3::S3Store;

use crate::config::Settings;
use crate::error::AppError;

/// The body of an object being stored: chunks, or the error that ends the upload.
pub trait Body: Stream<Item = Result<Bytes, AppError>> + Unpin {}
impl<T: Stream<Item = Result<Bytes, AppError>> + Unpin> Body for T {}

/// An object as listed by the store.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<NaiveDateTime>,
}

/// How a download is presented to the browser.
#[derive(Debug, Clone)]
pub struct Presentation {
    pub content_type: String,
    /// A full `Content-Disposition` header value.
    pub content_disposition: String,
}

#[derive(Clone)]
pub enum Store {
    S3(S3Store),
    Local(LocalStore),
}

impl Store {
    /// The store named by the settings: S3 when a bucket is set, else the local directory.
    pub async fn from_settings(settings: &Settings) -> anyhow::Result<Store> {
        Ok(match &settings.s3 {
            Some(s3) => Store::S3(S3Store::connect(s3).await),
            None => Store::Local(LocalStore::open(settings.data_dir.join("files"))?),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::S3(_) => "s3",
            Store::Local(_) => "local",
        }
    }

    /// The bucket (S3) or directory (local) in use.
    pub fn location(&self) -> String {
        match self {
            Store::S3(s) => s.bucket().to_owned(),
            Store::Local(l) => l.root().display().to_string(),
        }
    }

    /// A live round trip to the bucket or directory.
    pub async fn check(&self) -> Result<(), AppError> {
        match self {
            Store::S3(s) => s.check().await,
            Store::Local(l) => l.check().await,
        }
    }

    /// Stores `body` under `key`, all or nothing; returns the number of bytes stored.
    pub async fn put_stream(
        &self,
        key: &str,
        content_type: &str,
        body: &mut dyn Body,
    ) -> Result<u64, AppError> {
        match self {
            Store::S3(s) => s.put_stream(key, content_type, body).await,
            Store::Local(l) => l.put_stream(key, body).await,
        }
    }

    /// Deletes an object; deleting one that is not there is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), AppError> {
        match self {
            Store::S3(s) => s.delete(key).await,
            Store::Local(l) => l.delete(key).await,
        }
    }

    /// The size of an object, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, AppError> {
        match self {
            Store::S3(s) => s.head(key).await,
            Store::Local(l) => l.head(key).await,
        }
    }

    /// Every object whose key starts with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, AppError> {
        match self {
            Store::S3(s) => s.list(prefix).await,
            Store::Local(l) => l.list(prefix).await,
        }
    }

    /// A short-lived URL that serves the object directly (S3), or `None` when the server
    /// must stream it itself (local).
    pub async fn presigned_get(
        &self,
        key: &str,
        presentation: &Presentation,
        lifetime_seconds: u64,
    ) -> Result<Option<String>, AppError> {
        match self {
            Store::S3(s) => s
                .presigned_get(key, presentation, lifetime_seconds)
                .await
                .map(Some),
            Store::Local(_) => Ok(None),
        }
    }

    /// Where a local object lives on disk.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        match self {
            Store::S3(_) => None,
            Store::Local(l) => l.path_of(key).ok(),
        }
    }
}
