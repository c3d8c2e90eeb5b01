//! The S3 store, through aws-sdk-s3. Works with AWS and with S3-compatible servers
//! (path-style addressing when an endpoint is given).
//!
//! Uploads: a body that fits in one part goes up in a single PUT; a larger one as a multipart
//! upload in parts of exactly `PART_SIZE` (the last one shorter), with up to
//! `PARTS_IN_FLIGHT` parts being sent while the next is read from the client, so memory is
//! bounded by `PARTS_IN_FLIGHT + 1` parts whatever the file's size. A part is the body's
//! chunks as they arrived, handed to the SDK as they are (never copied into one buffer).
//! Any failure, including the request being dropped, aborts the multipart upload
//! (`MultipartUpload`).
//!
//! Payloads are not signed (`UNSIGNED-PAYLOAD`): signing hashes every part a second time
//! (the upload pipeline already hashes the file), which costs more CPU than the rest of the
//! upload path together. Integrity in transit is TLS's on AWS; use HTTPS endpoints.

mod direct;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::Bytes;
use chrono::NaiveDateTime;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::{Body, ObjectInfo, ObjectStream, Presentation};
use crate::config::{S3Encryption, S3Settings};
use crate::error::AppError;

/// S3 allows parts of 5 MiB to 5 GiB; 8 MiB keeps memory small and requests few.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts sent at once: two keep the link busy while the next part is read from the client.
/// More (four was tried) gained nothing measurable here and delays noticing a failed part
/// until the client has sent that many more parts, which a client that stops sending
/// never does (files::s3_store_stopping_mid_upload_is_503_and_leaves_nothing).
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    /// The client that presigns URLs for browsers: `client` itself, or one for
    /// `AWS_S3_PUBLIC_ENDPOINT` (presigning is local: it never connects).
    presigner: Client,
    bucket: String,
    encryption: Option<S3Encryption>,
}

fn unavailable<E>(e: E) -> AppError
where
    E: std::error::Error + Send + Sync + 'static,
{
    AppError::StorageUnavailable(anyhow::Error::new(e))
}

type PartTask = JoinHandle<Result<CompletedPart, AppError>>;

/// A multipart upload in progress. Unless completed it is aborted, even when the request
/// is dropped; a part still in flight is let land first, since an abort that races a part
/// upload can leave that part behind.
struct MultipartUpload {
    store: S3Store,
    key: String,
    upload_id: Option<String>,
    in_flight: VecDeque<PartTask>,
    completed: Vec<CompletedPart>,
}

impl MultipartUpload {
    /// Starts sending a part; with `PARTS_IN_FLIGHT` already under way, first waits for the
    /// oldest.
    async fn send(&mut self, part_number: i32, part: Part) -> Result<(), AppError> {
        if self.in_flight.len() == PARTS_IN_FLIGHT {
            let oldest = self.in_flight.pop_front().expect("parts in flight");
            self.completed.push(join_part(oldest).await?);
        }
        let upload_id = self.upload_id.clone().expect("an open upload");
        let task = self
            .store
            .clone()
            .upload_part(self.key.clone(), upload_id, part_number, part);
        self.in_flight.push_back(tokio::spawn(task));
        Ok(())
    }

    async fn complete(mut self) -> Result<(), AppError> {
        while let Some(part) = self.in_flight.pop_front() {
            self.completed.push(join_part(part).await?);
        }
        let upload_id = self.upload_id.take().expect("an open upload");
        let parts = std::mem::take(&mut self.completed);
        let result = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = result {
            self.upload_id = Some(upload_id); // dropping self aborts it
            return Err(unavailable(e));
        }
        Ok(())
    }

    async fn abort(mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        for part in self.in_flight.drain(..) {
            let _ = part.await;
        }
        abort_upload(
            &self.store.client,
            &self.store.bucket,
            &self.key,
            &upload_id,
        )
        .await;
    }
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let (store, key) = (self.store.clone(), self.key.clone());
        let parts = std::mem::take(&mut self.in_flight);
        tokio::spawn(async move {
            for part in parts {
                let _ = part.await;
            }
            abort_upload(&store.client, &store.bucket, &key, &upload_id).await;
        });
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    let result = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    if let Err(e) = result {
        // The orphan sweep and the bucket's lifecycle rules are the backstop.
        tracing::warn!(key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "aborting a multipart upload failed");
    }
}

impl S3Store {
    pub async fn connect(settings: &S3Settings) -> S3Store {
        let mut loader = aws_config::from_env().region(Region::new(settings.region.clone()));
        if let Some(c) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                String::from_utf8_lossy(c.secret_access_key.expose()).into_owned(),
                c.session_token
                    .as_ref()
                    .map(|t| String::from_utf8_lossy(t.expose()).into_owned()),
                None,
                "chatserver-settings",
            ));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            // Checksums only where S3 demands them: S3-compatible servers vary in support
            // for the newer trailing-checksum encodings.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(settings.timeouts.connect)
                    .read_timeout(settings.timeouts.read)
                    .operation_attempt_timeout(settings.timeouts.operation)
                    .operation_timeout(settings.timeouts.operation)
                    .build(),
            );
        let presigner = settings.public_endpoint.as_ref().map(|public| {
            let config = config.clone().endpoint_url(public).force_path_style(true);
            Client::from_conf(config.build())
        });
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        let client = Client::from_conf(config.build());
        S3Store {
            presigner: presigner.unwrap_or_else(|| client.clone()),
            client,
            bucket: settings.bucket.clone(),
            encryption: settings.encryption.clone(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The `x-amz-server-side-encryption` every write asks for (`AWS_S3_SSE`).
    fn sse(&self) -> Option<ServerSideEncryption> {
        self.encryption.as_ref().map(|e| match e {
            S3Encryption::Aes256 => ServerSideEncryption::Aes256,
            S3Encryption::Kms { .. } => ServerSideEncryption::AwsKms,
        })
    }

    fn sse_kms_key_id(&self) -> Option<String> {
        match &self.encryption {
            Some(S3Encryption::Kms { key_id }) => key_id.clone(),
            _ => None,
        }
    }

    pub async fn check(&self) -> Result<(), AppError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    pub async fn put_stream(
        &self,
        key: &str,
        presentation: &Presentation,
        body: &mut dyn Body,
    ) -> Result<u64, AppError> {
        let mut reader = PartReader::new(body);
        let first = reader.next_part().await?.unwrap_or_default();
        if reader.is_done() {
            return self.put_part_whole(key, presentation, first).await;
        }
        self.put_parts(key, presentation, first, &mut reader).await
    }

    /// One small object in one `PutObject`.
    pub async fn put_bytes(
        &self,
        key: &str,
        presentation: &Presentation,
        bytes: Bytes,
    ) -> Result<u64, AppError> {
        let len = bytes.len() as u64;
        let part = Part {
            chunks: vec![bytes],
            len,
        };
        self.put_part_whole(key, presentation, part).await
    }

    /// An object that fits in one part, in one `PutObject`.
    async fn put_part_whole(
        &self,
        key: &str,
        presentation: &Presentation,
        first: Part,
    ) -> Result<u64, AppError> {
        {
            let size = first.len;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(&presentation.content_type)
                .content_disposition(&presentation.content_disposition)
                .set_server_side_encryption(self.sse())
                .set_ssekms_key_id(self.sse_kms_key_id())
                .content_length(size as i64)
                .body(first.into_body())
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(unavailable)?;
            Ok(size)
        }
    }

    async fn put_parts(
        &self,
        key: &str,
        presentation: &Presentation,
        first: Part,
        reader: &mut PartReader<'_>,
    ) -> Result<u64, AppError> {
        let upload_id = self.create_multipart(key, presentation).await?;
        let mut upload = MultipartUpload {
            store: self.clone(),
            key: key.to_owned(),
            upload_id: Some(upload_id),
            in_flight: VecDeque::new(),
            completed: Vec::new(),
        };
        match send_parts(&mut upload, first, reader).await {
            Ok(size) => {
                upload.complete().await?;
                Ok(size)
            }
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    /// Starts a multipart upload at `key`, presented as `presentation` and encrypted as
    /// configured: its upload id.
    pub(crate) async fn create_multipart(
        &self,
        key: &str,
        presentation: &Presentation,
    ) -> Result<String, AppError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(&presentation.content_type)
            .content_disposition(&presentation.content_disposition)
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.sse_kms_key_id())
            .send()
            .await
            .map_err(unavailable)?;
        created
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| AppError::StorageUnavailable(anyhow!("no upload id from the store")))
    }

    async fn upload_part(
        self,
        key: String,
        upload_id: String,
        part_number: i32,
        part: Part,
    ) -> Result<CompletedPart, AppError> {
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(part.len as i64)
            .body(part.into_body())
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(unavailable)?;
        Ok(CompletedPart::builder()
            .set_e_tag(uploaded.e_tag().map(str::to_owned))
            .part_number(part_number)
            .build())
    }

    pub async fn delete(&self, key: &str) -> Result<(), AppError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    pub async fn head(&self, key: &str) -> Result<Option<u64>, AppError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Aborts the multipart uploads under `prefix` started before `cutoff`: what an instance
    /// killed mid-upload leaves behind (its parts are billed and invisible to listings).
    /// A server without `ListMultipartUploads` is said once in the log; nothing is aborted.
    pub async fn abort_stale_uploads(
        &self,
        prefix: &str,
        cutoff: NaiveDateTime,
        keep: &std::collections::HashSet<String>,
    ) -> Result<usize, AppError> {
        let mut aborted = 0;
        let (mut key_marker, mut upload_id_marker) = (None::<String>, None::<String>);
        loop {
            let page = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if e.code() == Some("NotImplemented") => {
                    static SAID: std::sync::Once = std::sync::Once::new();
                    SAID.call_once(|| {
                        tracing::warn!(
                            "this S3 server cannot list multipart uploads: uploads left by a \
                             killed instance are not aborted (set a lifecycle rule instead)"
                        )
                    });
                    return Ok(0);
                }
                Err(e) => return Err(unavailable(e)),
            };
            for upload in page.uploads() {
                let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                // Checked here too: a server that ignored `prefix` must not make us abort
                // another deployment's uploads.
                if !key.starts_with(prefix) || keep.contains(key) {
                    continue;
                }
                let started = upload
                    .initiated()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                    .map(|t| t.naive_utc());
                if started.is_none_or(|t| t > cutoff) {
                    continue;
                }
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map_err(unavailable)?;
                tracing::info!(key, "aborted a stale multipart upload");
                aborted += 1;
            }
            if page.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_id_marker.is_none() {
                return Ok(aborted);
            }
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, AppError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(unavailable)?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                found.push(ObjectInfo {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                        .map(|t| t.naive_utc()),
                });
            }
        }
        Ok(found)
    }

    /// An object's bytes as the SDK receives them; `None` when it does not exist.
    pub async fn get_stream(&self, key: &str) -> Result<Option<ObjectStream>, AppError> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let chunks = futures_util::stream::unfold(object.body, |mut body| async move {
            let chunk = body.next().await?;
            Some((chunk.map_err(unavailable), body))
        });
        Ok(Some(chunks.boxed()))
    }

    /// A listing of the objects under `prefix` a page (up to 1,000 keys) at a time, in the
    /// order S3 lists them: UTF-8 bytes.
    pub fn listing(&self, prefix: &str) -> S3Listing {
        S3Listing {
            store: self.clone(),
            prefix: prefix.to_owned(),
            continuation: None,
            done: false,
        }
    }

    pub async fn presigned_get(
        &self,
        key: &str,
        presentation: &Presentation,
        lifetime_seconds: u64,
    ) -> Result<String, AppError> {
        let config = PresigningConfig::expires_in(Duration::from_secs(lifetime_seconds.max(1)))
            .map_err(|e| AppError::Internal(e.into()))?;
        let request = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(&presentation.content_type)
            .response_content_disposition(&presentation.content_disposition)
            .response_cache_control("private, no-store")
            .presigned(config)
            .await
            .map_err(unavailable)?;
        Ok(request.uri().to_owned())
    }
}

/// See [`S3Store::listing`].
pub struct S3Listing {
    store: S3Store,
    prefix: String,
    continuation: Option<String>,
    done: bool,
}

impl S3Listing {
    /// The next page (possibly empty), or `None` when done.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ObjectInfo>>, AppError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .client
            .list_objects_v2()
            .bucket(&self.store.bucket)
            .prefix(&self.prefix)
            .set_continuation_token(self.continuation.take())
            .send()
            .await
            .map_err(unavailable)?;
        self.continuation = page.next_continuation_token().map(str::to_owned);
        self.done = page.is_truncated() != Some(true) || self.continuation.is_none();
        Ok(Some(
            page.contents()
                .iter()
                .filter_map(|object| {
                    Some(ObjectInfo {
                        key: object.key()?.to_owned(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        last_modified: object
                            .last_modified()
                            .and_then(|t| {
                                chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                            })
                            .map(|t| t.naive_utc()),
                    })
                })
                .collect(),
        ))
    }
}

async fn join_part(task: PartTask) -> Result<CompletedPart, AppError> {
    task.await
        .map_err(|e| AppError::Internal(anyhow!("part upload task failed: {e}")))?
}

/// Sends `first` and then the rest of the body, part by part; returns the bytes sent.
async fn send_parts(
    upload: &mut MultipartUpload,
    first: Part,
    reader: &mut PartReader<'_>,
) -> Result<u64, AppError> {
    let mut size = first.len;
    upload.send(1, first).await?;
    for part_number in 2.. {
        let Some(part) = reader.next_part().await? else {
            break;
        };
        size += part.len;
        upload.send(part_number, part).await?;
    }
    Ok(size)
}

/// One part: the body's chunks in order, `len` bytes in all. Cloning it (for a retry of the
/// request) clones reference counts, not bytes.
#[derive(Clone, Default)]
struct Part {
    chunks: Vec<Bytes>,
    len: u64,
}

impl Part {
    /// The request body: the chunks one after the other, with an exact length (so the SDK
    /// sends a `Content-Length`), rebuilt from the chunks if the SDK retries the request.
    fn into_body(self) -> ByteStream {
        ByteStream::new(SdkBody::retryable(move || {
            SdkBody::from_body_1_x(PartBody {
                chunks: self.chunks.clone().into_iter(),
                remaining: self.len,
            })
        }))
    }
}

/// A part's chunks as an HTTP body.
struct PartBody {
    chunks: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl http_body::Body for PartBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let Some(chunk) = self.chunks.next() else {
            return Poll::Ready(None);
        };
        self.remaining -= chunk.len() as u64;
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Cuts a body into parts of exactly `PART_SIZE` (the last may be shorter). A chunk that
/// crosses a boundary is split (sharing its bytes), so a part never holds more than
/// `PART_SIZE` bytes.
struct PartReader<'a> {
    body: &'a mut dyn Body,
    carry: Option<Bytes>,
    ended: bool,
}

impl<'a> PartReader<'a> {
    fn new(body: &'a mut dyn Body) -> Self {
        PartReader {
            body,
            carry: None,
            ended: false,
        }
    }

    /// Whether everything has been handed out.
    fn is_done(&self) -> bool {
        self.ended && self.carry.is_none()
    }

    async fn next_part(&mut self) -> Result<Option<Part>, AppError> {
        if self.is_done() {
            return Ok(None);
        }
        let mut part = Part::default();
        while part.len < PART_SIZE as u64 {
            let mut chunk = match self.carry.take() {
                Some(chunk) => chunk,
                None => match self.body.next().await {
                    Some(chunk) => chunk?,
                    None => {
                        self.ended = true;
                        break;
                    }
                },
            };
            let room = PART_SIZE - part.len as usize;
            if chunk.len() > room {
                self.carry = Some(chunk.split_off(room));
            }
            if !chunk.is_empty() {
                part.len += chunk.len() as u64;
                part.chunks.push(chunk);
            }
        }
        Ok((part.len > 0).then_some(part))
    }
}
