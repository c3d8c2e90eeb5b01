//! Direct uploads on the local store: the part URLs point at the server itself
//! (`PUT /api/uploads/{id}/parts/{n}?token=`), each part streams to
//! `root/parts/{session}/{n}.{etag}`, and `complete` joins them into the object.

use std::collections::HashSet;
use std::path::PathBuf;

use bytes::Bytes;
use chrono::NaiveDateTime;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{LocalStore, TempFile, unavailable};
use crate::error::AppError;
use crate::storage::{Body, StoredPart};

impl LocalStore {
    /// The directory of a session's parts; session ids are server-made, checked anyway.
    fn parts_dir(&self, session_id: &str) -> Result<PathBuf, AppError> {
        if session_id.is_empty() || !session_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(AppError::Internal(anyhow::anyhow!(
                "unsafe session id {session_id:?}"
            )));
        }
        Ok(self.root.join("parts").join(session_id))
    }

    /// Streams part `part_number` to disk, keeping at most `limit + 1` bytes (one more than
    /// the part may have, so `complete` sees the mismatch without the disk filling up).
    /// Replaces an earlier copy of the part. Returns the bytes kept and the part's ETag.
    pub async fn direct_put_part(
        &self,
        session_id: &str,
        part_number: i32,
        limit: u64,
        body: &mut dyn Body,
    ) -> Result<(u64, String), AppError> {
        let dir = self.parts_dir(session_id)?;
        tokio::fs::create_dir_all(&dir).await.map_err(unavailable)?;
        let etag = uuid::Uuid::new_v4().simple().to_string();
        let temp_path = dir.join(format!(".{part_number}.{etag}.tmp"));
        let mut temp = TempFile {
            path: Some(temp_path.clone()),
        };
        let mut file = tokio::fs::File::create(&temp_path)
            .await
            .map_err(unavailable)?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk?;
            let room = (limit + 1 - written) as usize;
            let keep = &chunk[..chunk.len().min(room)];
            file.write_all(keep).await.map_err(unavailable)?;
            written += keep.len() as u64;
            if written > limit {
                break;
            }
        }
        file.sync_all().await.map_err(unavailable)?;
        drop(file);
        // Earlier copies of this part go first: a listing then never shows two.
        for old in self.direct_parts(session_id).await? {
            if old.part_number == part_number {
                let _ =
                    tokio::fs::remove_file(dir.join(format!("{part_number}.{}", old.etag))).await;
            }
        }
        tokio::fs::rename(&temp_path, dir.join(format!("{part_number}.{etag}")))
            .await
            .map_err(unavailable)?;
        temp.path = None;
        Ok((written, etag))
    }

    /// The parts stored so far, by number.
    pub async fn direct_parts(&self, session_id: &str) -> Result<Vec<StoredPart>, AppError> {
        let dir = self.parts_dir(session_id)?;
        tokio::task::spawn_blocking(move || -> Result<Vec<StoredPart>, AppError> {
            let read = match std::fs::read_dir(&dir) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(unavailable(e)),
            };
            let mut parts = Vec::new();
            for entry in read {
                let entry = entry.map_err(unavailable)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((number, etag)) = name.split_once('.') else {
                    continue;
                };
                let Ok(part_number) = number.parse::<i32>() else {
                    continue;
                };
                let Ok(meta) = entry.metadata() else { continue };
                parts.push(StoredPart {
                    part_number,
                    size: meta.len(),
                    etag: etag.to_owned(),
                });
            }
            parts.sort_by_key(|p| p.part_number);
            Ok(parts)
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))?
    }

    /// Joins the parts, in order, into the object `key` (written to `tmp/` first and renamed
    /// into place), then removes them.
    pub async fn direct_finish(
        &self,
        session_id: &str,
        key: &str,
        parts: &[StoredPart],
    ) -> Result<(), AppError> {
        let dir = self.parts_dir(session_id)?;
        let target = self.path_of(key)?;
        let temp_path = self.root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let sources: Vec<PathBuf> = parts
            .iter()
            .map(|p| dir.join(format!("{}.{}", p.part_number, p.etag)))
            .collect();
        tokio::task::spawn_blocking(move || -> Result<(), AppError> {
            let mut temp = TempFile {
                path: Some(temp_path.clone()),
            };
            let mut out = std::fs::File::create(&temp_path).map_err(unavailable)?;
            for source in sources {
                let mut part = std::fs::File::open(source).map_err(unavailable)?;
                std::io::copy(&mut part, &mut out).map_err(unavailable)?;
            }
            out.sync_all().map_err(unavailable)?;
            drop(out);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(unavailable)?;
            }
            std::fs::rename(&temp_path, &target).map_err(unavailable)?;
            temp.path = None;
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))?
    }

    /// Removes the parts directories of sessions that are no longer live (their cleanup
    /// failed, or the process died in it) not written to since `cutoff`; how many.
    pub async fn remove_stale_parts(
        &self,
        cutoff: NaiveDateTime,
        live_sessions: &HashSet<String>,
    ) -> Result<usize, AppError> {
        let parts = self.root.join("parts");
        let live = live_sessions.clone();
        tokio::task::spawn_blocking(move || -> Result<usize, AppError> {
            let entries = match std::fs::read_dir(&parts) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(unavailable(e)),
            };
            let mut removed = 0;
            for entry in entries {
                let entry = entry.map_err(unavailable)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(meta) = entry.metadata() else { continue };
                let written = meta
                    .modified()
                    .ok()
                    .map(|t| chrono::DateTime::<chrono::Utc>::from(t).naive_utc());
                if meta.is_dir() && !live.contains(&name) && written.is_some_and(|t| t <= cutoff) {
                    match std::fs::remove_dir_all(entry.path()) {
                        Ok(()) => {
                            tracing::info!(
                                session = name,
                                "removed the parts of a session that ended"
                            );
                            removed += 1;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))?
    }

    /// Removes a session's parts and its object, whichever exist.
    pub async fn direct_abort(&self, session_id: &str, key: &str) -> Result<(), AppError> {
        match tokio::fs::remove_dir_all(self.parts_dir(session_id)?).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unavailable(e)),
        }
        self.delete(key).await
    }

    /// Up to `limit` first bytes of an object; `None` when it does not exist.
    pub async fn read_head(&self, key: &str, limit: usize) -> Result<Option<Bytes>, AppError> {
        use tokio::io::AsyncReadExt;
        let file = match tokio::fs::File::open(self.path_of(key)?).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let mut head = Vec::with_capacity(limit);
        file.take(limit as u64)
            .read_to_end(&mut head)
            .await
            .map_err(unavailable)?;
        Ok(Some(Bytes::from(head)))
    }
}
