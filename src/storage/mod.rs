//! The file store: S3 (or any S3-compatible server) or a local directory, behind one interface.
//!
//! Both take an object as a stream of chunks and either store all of it or nothing: a body
//! that fails midway (too large, wrong type, client gone) or a store that fails midway leaves
//! no object behind, and neither ever holds a whole file in memory.

mod direct;
mod local;
mod s3;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{
    Charset, ContentDisposition, DispositionParam, DispositionType, ExtendedValue,
};
use bytes::Bytes;
use chrono::NaiveDateTime;
use futures_util::Stream;

pub use direct::{DirectTarget, StoredPart};
pub use local::{LocalStore, SortedWalk};
pub use s3::{S3Listing, S3Store};

use crate::config::Settings;
use crate::error::AppError;
use crate::metrics::Metrics;

/// An object's bytes as they are read, a chunk at a time.
pub type ObjectStream = futures_util::stream::BoxStream<'static, Result<Bytes, AppError>>;

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

/// How a download is presented to the browser. S3 objects carry it as their own
/// metadata too, so a link made by other tools (or a bucket browsed by an operator) still
/// downloads an HTML file as a file named as the user named it, never renders it.
#[derive(Debug, Clone)]
pub struct Presentation {
    pub content_type: String,
    /// A full `Content-Disposition` header value.
    pub content_disposition: String,
}

impl Presentation {
    /// Images, audio and video may show inline; everything else downloads.
    pub fn of(file_name: &str, content_type: &str) -> Self {
        let inline = ["image/", "audio/", "video/"]
            .iter()
            .any(|p| content_type.starts_with(p))
            && content_type != "image/svg+xml";
        // RFC 6266: an ASCII fallback, and the exact name in RFC 5987 form.
        let fallback: String = file_name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let disposition = ContentDisposition {
            disposition: if inline {
                DispositionType::Inline
            } else {
                DispositionType::Attachment
            },
            parameters: vec![
                DispositionParam::Filename(fallback),
                DispositionParam::FilenameExt(ExtendedValue {
                    charset: Charset::Ext("UTF-8".into()),
                    language_tag: None,
                    value: file_name.as_bytes().to_vec(),
                }),
            ],
        };
        Presentation {
            content_type: content_type.to_owned(),
            content_disposition: disposition.to_string(),
        }
    }
}

/// The store of one deployment: a backend, and the key prefix under which this
/// deployment's objects live. Deployments sharing a bucket (or a data directory) have
/// different prefixes, and everything that lists objects stays inside its own.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    key_prefix: Arc<str>,
    /// Each call is timed, and failures of the store counted.
    metrics: Metrics,
}

#[derive(Clone)]
enum Backend {
    S3(S3Store),
    Local(LocalStore),
}

impl Store {
    /// The store named by the settings (S3 when a bucket is set, else the local
    /// directory), for the deployment whose objects live under `key_prefix`.
    pub async fn from_settings(
        settings: &Settings,
        key_prefix: &str,
        metrics: Metrics,
    ) -> anyhow::Result<Store> {
        let backend = match &settings.store.s3 {
            Some(s3) => Backend::S3(S3Store::connect(s3).await),
            None => Backend::Local(LocalStore::open(settings.server.data_dir.join("files"))?),
        };
        Ok(Store {
            backend,
            key_prefix: Arc::from(key_prefix.trim_matches('/')),
            metrics,
        })
    }

    /// Times a call to the store and counts its failure.
    async fn measured<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, AppError>>,
    ) -> Result<T, AppError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.store_call(operation, started, &result);
        result
    }

    /// This deployment's prefix, without a trailing `/`.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Every key this deployment writes starts with this; the orphan sweep lists nothing
    /// else.
    pub fn owned_prefix(&self) -> String {
        format!("{}/", self.key_prefix)
    }

    /// A new object key: the deployment's prefix, channel and date, a UUID, and the sniffed
    /// type's extension. Nothing in it comes from the client.
    pub fn new_object_key(&self, channel_id: i32, extension: &str) -> String {
        let today = chrono::Utc::now().format("%Y/%m/%d");
        format!(
            "{}/channels/{channel_id}/{today}/{}.{extension}",
            self.key_prefix,
            uuid::Uuid::new_v4()
        )
    }

    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::S3(_) => "s3",
            Backend::Local(_) => "local",
        }
    }

    /// The bucket (S3) or directory (local) in use.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::S3(s) => s.bucket().to_owned(),
            Backend::Local(l) => l.root().display().to_string(),
        }
    }

    /// A live round trip to the bucket or directory.
    pub async fn check(&self) -> Result<(), AppError> {
        self.measured("check", async {
            match &self.backend {
                Backend::S3(s) => s.check().await,
                Backend::Local(l) => l.check().await,
            }
        })
        .await
    }

    /// Stores `body` under `key`, all or nothing; returns the number of bytes stored. S3
    /// keeps `presentation` on the object; the local store's files are only ever served
    /// through the app, which presents them from the row.
    pub async fn put_stream(
        &self,
        key: &str,
        presentation: &Presentation,
        body: &mut dyn Body,
    ) -> Result<u64, AppError> {
        self.measured("put", async {
            match &self.backend {
                Backend::S3(s) => s.put_stream(key, presentation, body).await,
                Backend::Local(l) => l.put_stream(key, body).await,
            }
        })
        .await
    }

    /// Stores a small object held in memory (a thumbnail), all or nothing. Unlike
    /// `put_stream`, its future is `Send`: background tasks can store.
    pub async fn put_bytes(
        &self,
        key: &str,
        presentation: &Presentation,
        bytes: Bytes,
    ) -> Result<u64, AppError> {
        self.measured("put", async {
            match &self.backend {
                Backend::S3(s) => s.put_bytes(key, presentation, bytes).await,
                Backend::Local(l) => l.put_bytes(key, bytes).await,
            }
        })
        .await
    }

    /// Deletes an object; deleting one that is not there is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), AppError> {
        self.measured("delete", async {
            match &self.backend {
                Backend::S3(s) => s.delete(key).await,
                Backend::Local(l) => l.delete(key).await,
            }
        })
        .await
    }

    /// The size of an object, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, AppError> {
        self.measured("head", async {
            match &self.backend {
                Backend::S3(s) => s.head(key).await,
                Backend::Local(l) => l.head(key).await,
            }
        })
        .await
    }

    /// Every object whose key starts with `prefix`.
    /// Removes what uploads of a killed process left behind and not touched since `cutoff`:
    /// S3 multipart uploads under this deployment's prefix, the local store's temporary
    /// files. Returns how many. Multipart uploads of the keys in `keep` (live direct
    /// uploads, which take their time) are left alone.
    pub async fn abort_stale_uploads(
        &self,
        cutoff: NaiveDateTime,
        keep: &std::collections::HashSet<String>,
        live_sessions: &std::collections::HashSet<String>,
    ) -> Result<usize, AppError> {
        match &self.backend {
            Backend::S3(s) => {
                s.abort_stale_uploads(&self.owned_prefix(), cutoff, keep)
                    .await
            }
            Backend::Local(l) => Ok(l.remove_stale_temp_files(cutoff).await?
                + l.remove_stale_parts(cutoff, live_sessions).await?),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, AppError> {
        self.measured("list", async {
            match &self.backend {
                Backend::S3(s) => s.list(prefix).await,
                Backend::Local(l) => l.list(prefix).await,
            }
        })
        .await
    }

    /// The objects under `prefix` in the byte order of their keys (S3's order), a page at a
    /// time, holding no more than a page (and, locally, the directories on the way) in
    /// memory. For `verify`, which merges it with the rows in the same order.
    pub fn list_sorted(&self, prefix: &str, page_size: usize) -> Listing {
        Listing {
            source: match &self.backend {
                Backend::S3(s) => ListingSource::S3(s.listing(prefix)),
                Backend::Local(l) => ListingSource::Local(Some(l.sorted_walk(prefix))),
            },
            page_size: page_size.max(1),
            metrics: self.metrics.clone(),
        }
    }

    /// An object's bytes as a stream (nothing held beyond a chunk), or `None` when it does
    /// not exist.
    pub async fn get_stream(&self, key: &str) -> Result<Option<ObjectStream>, AppError> {
        self.measured("get", async {
            match &self.backend {
                Backend::S3(s) => s.get_stream(key).await,
                Backend::Local(l) => l.get_stream(key).await,
            }
        })
        .await
    }

    /// The SHA-256 (hex) and the size of an object's bytes, read through; `None` when it
    /// does not exist.
    pub async fn sha256(&self, key: &str) -> Result<Option<(u64, String)>, AppError> {
        use futures_util::StreamExt;
        use sha2::Digest;
        let Some(mut body) = self.get_stream(key).await? else {
            return Ok(None);
        };
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some((size, hex::encode(hasher.finalize()))))
    }

    /// An object's bytes, read whole, or `None` when it does not exist. An object of more
    /// than `max_bytes` is an error: callers bound what they hold (the preview worker reads
    /// images of at most `MAX_FILE_SIZE_MB`).
    pub async fn read(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, AppError> {
        use futures_util::StreamExt;
        let Some(mut body) = self.get_stream(key).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(AppError::Internal(anyhow::anyhow!(
                    "object {key} is over {max_bytes} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    /// A short-lived URL that serves the object directly (S3), or `None` when the server
    /// must stream it itself (local).
    pub async fn presigned_get(
        &self,
        key: &str,
        presentation: &Presentation,
        lifetime_seconds: u64,
    ) -> Result<Option<String>, AppError> {
        match &self.backend {
            Backend::S3(s) => self
                .measured(
                    "presign",
                    s.presigned_get(key, presentation, lifetime_seconds),
                )
                .await
                .map(Some),
            Backend::Local(_) => Ok(None),
        }
    }

    /// Where a local object lives on disk.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        match &self.backend {
            Backend::S3(_) => None,
            Backend::Local(l) => l.path_of(key).ok(),
        }
    }
}

/// See [`Store::list_sorted`].
pub struct Listing {
    source: ListingSource,
    page_size: usize,
    metrics: Metrics,
}

enum ListingSource {
    S3(S3Listing),
    /// Taken while a page is read on the blocking pool; `None` after a failure.
    Local(Option<SortedWalk>),
}

impl Listing {
    /// The next page in key order (possibly empty), or `None` when the listing is done.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ObjectInfo>>, AppError> {
        let started = Instant::now();
        let result = match &mut self.source {
            ListingSource::S3(listing) => listing.next_page().await,
            ListingSource::Local(slot) => {
                let mut walk = slot.take().ok_or_else(|| {
                    AppError::Internal(anyhow::anyhow!("the listing failed earlier"))
                })?;
                let limit = self.page_size;
                let (walk, page) = tokio::task::spawn_blocking(move || {
                    let page = walk.next_page(limit);
                    (walk, page)
                })
                .await
                .map_err(|e| AppError::Internal(e.into()))?;
                *slot = Some(walk);
                page.map(|page| (!page.is_empty()).then_some(page))
            }
        };
        self.metrics.store_call("list", started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_deployments_prefix_and_carry_no_client_input() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            backend: Backend::Local(LocalStore::open(dir.path().to_owned()).unwrap()),
            key_prefix: Arc::from("d0123456789ab"),
            metrics: Metrics::new(),
        };
        let key = store.new_object_key(7, "png");
        assert!(key.starts_with("d0123456789ab/channels/7/"), "{key}");
        assert!(key.starts_with(&store.owned_prefix()));
        assert!(key.ends_with(".png"));
        assert_eq!(key.split('/').count(), 7);
    }
}
