//! Rows as loaded from the database, and the JSON shapes the API answers with.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::schema::{channels, file_uploads, messages, users};

/// Timestamps are stored as UTC without a zone and sent as RFC 3339 (`2026-11-22T10:30:00Z`).
pub mod rfc3339 {
    use chrono::NaiveDateTime;
    use serde::Serializer;

    /// `YYYY-MM-DDTHH:MM:SSZ`. Written out field by field: chrono's `format` parses its
    /// pattern on every call, which was 5 % of a history page's CPU (several timestamps per
    /// message, 50 messages a page).
    pub fn format(t: &NaiveDateTime) -> String {
        use chrono::{Datelike, Timelike};
        use std::fmt::Write;
        let mut out = String::with_capacity(20);
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        out
    }

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%SZ").map_err(serde::de::Error::custom)
    }

    pub mod option {
        use chrono::NaiveDateTime;
        use serde::Serializer;

        pub fn serialize<S: Serializer>(
            t: &Option<NaiveDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::format(t)),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod rfc3339_tests {
    #[test]
    fn formats_as_chrono_does_and_reads_back() {
        for text in [
            "2026-12-05T03:04:05Z",
            "0999-01-09T23:59:59Z",
            "2024-02-29T00:00:00Z",
        ] {
            let t = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ").unwrap();
            assert_eq!(super::rfc3339::format(&t), text);
            assert_eq!(
                super::rfc3339::format(&t),
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            );
        }
    }
}

/// Now, in UTC, at the microsecond precision both backends keep.
pub fn now() -> NaiveDateTime {
    use chrono::SubsecRound;
    chrono::Utc::now().naive_utc().trunc_subsecs(6)
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize, utoipa::ToSchema)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i32,
    pub username: String,
    pub display_name: String,
    #[serde(with = "rfc3339")]
    pub created_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub password_hash: &'a str,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = channels)]
pub struct Channel {
    pub id: i32,
    pub name: String,
    pub is_private: bool,
    pub created_by: i32,
    #[serde(with = "rfc3339")]
    pub created_at: NaiveDateTime,
    /// Files older than this many days are deleted (the deployment's
    /// `FILE_RETENTION_DAYS` applies too; the shorter wins). Null: the deployment's alone.
    pub retention_days: Option<i32>,
    /// `channel`, or `dm` for a direct message between two users.
    pub kind: String,
}

pub const KIND_CHANNEL: &str = "channel";
pub const KIND_DM: &str = "dm";

#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub id: i32,
    pub channel_id: i32,
    pub user_id: i32,
    pub content: String,
    pub created_at: NaiveDateTime,
    pub edited_at: Option<NaiveDateTime>,
    /// The top-level message this one replies to.
    pub thread_id: Option<i32>,
    /// On a top-level message: its live replies, and when the newest was posted.
    pub reply_count: i32,
    pub last_reply_at: Option<NaiveDateTime>,
}

/// The reactions of one emoji on a message: who, in the order they reacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReactionSummary {
    pub emoji: String,
    pub count: i64,
    pub user_ids: Vec<i32>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = file_uploads)]
pub struct FileUpload {
    pub id: i32,
    pub message_id: i32,
    pub channel_id: i32,
    pub file_name: String,
    pub s3_key: String,
    pub content_type: Option<String>,
    pub file_size: Option<i64>,
    pub sha256: Option<String>,
    pub uploaded_by: Option<i32>,
    pub uploaded_at: NaiveDateTime,
    pub is_deleted: bool,
    pub deleted_at: Option<NaiveDateTime>,
    pub download_count: i64,
    pub last_downloaded_at: Option<NaiveDateTime>,
    /// Displayed size (orientation applied), set by the preview worker. Absent in events of
    /// older instances (a rolling upgrade): unknown.
    #[serde(default)]
    pub width: Option<i32>,
    #[serde(default)]
    pub height: Option<i32>,
    /// The thumbnail object, stored beside the original.
    #[serde(default)]
    pub thumbnail_key: Option<String>,
    /// A ThumbHash, base64.
    #[serde(default)]
    pub preview: Option<String>,
}

/// `file` in API.md: the row plus a download link issued to the caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileView {
    pub id: i32,
    pub message_id: i32,
    pub channel_id: i32,
    pub file_name: String,
    pub content_type: Option<String>,
    pub file_size: Option<i64>,
    pub sha256: Option<String>,
    pub uploaded_by: Option<i32>,
    #[serde(with = "rfc3339")]
    pub uploaded_at: NaiveDateTime,
    pub url: String,
    #[serde(with = "rfc3339")]
    pub url_expires_at: NaiveDateTime,
    /// Images, once the preview worker has read them; null otherwise.
    pub width: Option<i32>,
    pub height: Option<i32>,
    /// A link to a small preview (about 400 px on the long side), under the same rules as
    /// `url` and expiring with it; null until it exists or when there is none.
    pub thumbnail_url: Option<String>,
    /// A ThumbHash (base64) to paint while the thumbnail loads; null when there is none.
    pub preview: Option<String>,
}

impl FileView {
    pub fn new(
        file: &FileUpload,
        url: String,
        thumbnail_url: Option<String>,
        url_expires_at: NaiveDateTime,
    ) -> Self {
        FileView {
            id: file.id,
            message_id: file.message_id,
            channel_id: file.channel_id,
            file_name: file.file_name.clone(),
            content_type: file.content_type.clone(),
            file_size: file.file_size,
            sha256: file.sha256.clone(),
            uploaded_by: file.uploaded_by,
            uploaded_at: file.uploaded_at,
            url,
            url_expires_at,
            width: file.width,
            height: file.height,
            thumbnail_url,
            preview: file.preview.clone(),
        }
    }
}

/// `message` in API.md.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: i32,
    pub channel_id: i32,
    pub user_id: i32,
    pub username: String,
    /// The author's display name as of now (an event: as of the event).
    pub display_name: String,
    pub content: String,
    #[serde(with = "rfc3339")]
    pub created_at: NaiveDateTime,
    /// When the content was last edited; null if never.
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub edited_at: Option<NaiveDateTime>,
    /// The top-level message this one replies to; null for top-level messages.
    pub thread_id: Option<i32>,
    /// Live replies (0 on replies).
    pub reply_count: i32,
    /// When the newest live reply was posted; null without replies.
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub last_reply_at: Option<NaiveDateTime>,
    pub files: Vec<FileView>,
    /// One entry per emoji, in the order each was first used.
    pub reactions: Vec<ReactionSummary>,
    /// The ids of the users the content mentions (`@username` of a member, everyone for
    /// `@channel`; never the author), by id.
    pub mentions: Vec<i32>,
    /// Given by the poster; echoed in the `message_created` event (which every member gets)
    /// so that the poster can match its optimistic copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Message {
    pub fn new(parts: MessageParts, files: Vec<FileView>) -> Self {
        let MessageParts {
            row,
            username,
            display_name,
            reactions,
            mentions,
            ..
        } = parts;
        Message {
            id: row.id,
            channel_id: row.channel_id,
            user_id: row.user_id,
            username,
            display_name,
            content: row.content,
            created_at: row.created_at,
            edited_at: row.edited_at,
            thread_id: row.thread_id,
            reply_count: row.reply_count,
            last_reply_at: row.last_reply_at,
            files,
            reactions,
            mentions,
            client_id: None,
        }
    }
}

/// A message as loaded: the row, its author's names, its live files and its reactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageParts {
    pub row: MessageRow,
    pub username: String,
    pub display_name: String,
    pub files: Vec<FileUpload>,
    pub reactions: Vec<ReactionSummary>,
    /// Absent in events of older instances (a rolling upgrade): none.
    #[serde(default)]
    pub mentions: Vec<i32>,
}

/// A file stored in the store, not yet recorded in the database.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub key: String,
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}
