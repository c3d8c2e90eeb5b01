//! Direct uploads on S3: the browser sends the bytes with presigned URLs; the server starts,
//! lists, completes and aborts. A file of one part is one presigned `PutObject`; a larger
//! one is a multipart upload with a presigned `UploadPart` per part.
//!
//! Presigning uses the store's client, built with `RequestChecksumCalculation::WhenRequired`:
//! with the SDK's default (since 1.69) a presigned URL carries the CRC32 of an empty body,
//! and every real upload then fails with `BadDigest`.

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, CompletedMultipartUpload,
    CompletedPart, CorsConfiguration, CorsRule, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter,
};
use bytes::{Bytes, BytesMut};

use super::{S3Store, abort_upload, unavailable};
use crate::error::AppError;
use crate::storage::{Presentation, StoredPart};

impl S3Store {
    /// Starts a direct upload at `key`: the multipart upload's id, or `None` when the file
    /// is one presigned `PutObject`. With server-side encryption even one part goes
    /// multipart: the encryption is asked for once here, not by every browser's `PUT`.
    pub async fn direct_begin(
        &self,
        key: &str,
        part_count: i32,
        presentation: &Presentation,
    ) -> Result<Option<String>, AppError> {
        if part_count == 1 && self.encryption.is_none() {
            return Ok(None);
        }
        self.create_multipart(key, presentation).await.map(Some)
    }

    /// A presigned `PUT` URL for part `part_number` (or the whole object).
    pub async fn direct_part_url(
        &self,
        key: &str,
        upload_id: Option<&str>,
        part_number: i32,
        lifetime: Duration,
    ) -> Result<String, AppError> {
        let config =
            PresigningConfig::expires_in(lifetime).map_err(|e| AppError::Internal(e.into()))?;
        let request = match upload_id {
            None => self
                .presigner
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .presigned(config)
                .await
                .map_err(unavailable)?,
            Some(upload_id) => self
                .presigner
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(part_number)
                .presigned(config)
                .await
                .map_err(unavailable)?,
        };
        Ok(request.uri().to_owned())
    }

    /// The parts stored so far, by number: `ListParts` (every page), or for a single
    /// `PutObject` the object itself as part 1.
    pub async fn direct_parts(
        &self,
        key: &str,
        upload_id: Option<&str>,
    ) -> Result<Vec<StoredPart>, AppError> {
        let Some(upload_id) = upload_id else {
            return match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(head) => Ok(vec![StoredPart {
                    part_number: 1,
                    size: head.content_length().unwrap_or(0).max(0) as u64,
                    etag: head.e_tag().unwrap_or_default().to_owned(),
                }]),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(Vec::new()),
                Err(e) => Err(unavailable(e)),
            };
        };
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(unavailable)?;
            for part in page.parts() {
                parts.push(StoredPart {
                    part_number: part.part_number().unwrap_or(0),
                    size: part.size().unwrap_or(0).max(0) as u64,
                    etag: part.e_tag().unwrap_or_default().to_owned(),
                });
            }
            marker = page.next_part_number_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || marker.is_none() {
                break;
            }
        }
        parts.sort_by_key(|p| p.part_number);
        parts.dedup_by_key(|p| p.part_number);
        Ok(parts)
    }

    /// Completes a multipart upload from the parts as the store listed them.
    pub async fn direct_finish(
        &self,
        key: &str,
        upload_id: Option<&str>,
        parts: &[StoredPart],
    ) -> Result<(), AppError> {
        let Some(upload_id) = upload_id else {
            return Ok(());
        };
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.part_number)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Ends a direct upload: aborts its multipart upload (the parts go with it) and deletes
    /// the object, whichever exists.
    pub async fn direct_abort(&self, key: &str, upload_id: Option<&str>) -> Result<(), AppError> {
        if let Some(upload_id) = upload_id {
            abort_upload(&self.client, &self.bucket, key, upload_id).await;
        }
        self.delete(key).await
    }

    /// Up to `limit` first bytes of an object (a ranged GET); `None` when it does not exist.
    pub async fn read_head(&self, key: &str, limit: usize) -> Result<Option<Bytes>, AppError> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes=0-{}", limit.max(1) - 1))
            .send()
            .await
        {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            // An empty object has no byte 0 to range over.
            Err(e) if e.code() == Some("InvalidRange") => return Ok(Some(Bytes::new())),
            Err(e) => return Err(unavailable(e)),
        };
        let mut body = object.body;
        let mut head = BytesMut::new();
        while let Some(chunk) = body.next().await {
            head.extend_from_slice(&chunk.map_err(unavailable)?);
            if head.len() >= limit {
                break;
            }
        }
        head.truncate(limit);
        Ok(Some(head.freeze()))
    }

    /// At start: an `AbortIncompleteMultipartUpload` rule on `staging_prefix`, and, with
    /// `cors_origins`, the CORS rule browsers need to `PUT` parts and read their `ETag`.
    /// A bucket (or server) that refuses says so in one log line each; nothing fails.
    pub async fn apply_bucket_rules(
        &self,
        staging_prefix: &str,
        abort_after_days: i32,
        cors_origins: &[String],
    ) {
        let applied = async {
            let rule = LifecycleRule::builder()
                .id("chatserver-direct-uploads")
                .filter(
                    LifecycleRuleFilter::builder()
                        .prefix(staging_prefix)
                        .build(),
                )
                .status(ExpirationStatus::Enabled)
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(abort_after_days)
                        .build(),
                )
                .build()
                .map_err(|e| e.to_string())?;
            let config = BucketLifecycleConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| e.to_string())?;
            self.client
                .put_bucket_lifecycle_configuration()
                .bucket(&self.bucket)
                .lifecycle_configuration(config)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| e.code().unwrap_or("unknown error").to_owned())
        }
        .await;
        match applied {
            Ok(()) => tracing::info!(
                prefix = staging_prefix,
                "direct uploads: lifecycle rule set (abort incomplete multipart uploads)"
            ),
            Err(why) => tracing::warn!(
                prefix = staging_prefix,
                reason = %why,
                "direct uploads: the bucket refused the lifecycle rule; the sweeper alone aborts stale multipart uploads"
            ),
        }
        if cors_origins.is_empty() {
            return;
        }
        let rule = CorsRule::builder()
            .set_allowed_origins(Some(cors_origins.to_vec()))
            .allowed_methods("PUT")
            .allowed_methods("GET")
            .allowed_headers("*")
            .expose_headers("ETag")
            .max_age_seconds(3600)
            .build();
        let applied = match rule {
            Ok(rule) => match CorsConfiguration::builder().cors_rules(rule).build() {
                Ok(config) => self
                    .client
                    .put_bucket_cors()
                    .bucket(&self.bucket)
                    .cors_configuration(config)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.code().unwrap_or("unknown error").to_owned()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        match applied {
            Ok(()) => {
                tracing::info!(origins = ?cors_origins, "direct uploads: bucket CORS rule set")
            }
            Err(why) => {
                tracing::warn!(reason = %why, "direct uploads: the bucket refused the CORS rule (AWS_S3_CORS_ORIGINS)")
            }
        }
    }
}
