//! The chat core: what a message is allowed to be, and posting it. REST handlers and the
//! WebSocket session both call this; it knows the database and the event bus, not HTTP.

use crate::db::models::{FileUpload, StoredFile};
use crate::db::{self, messages::MessageParts};
use crate::error::{AppError, ErrorCode};
use crate::idempotency::Answer;
use crate::realtime::{DeletionReason, Event};
use crate::state::{Announcement, AppState};

pub const MAX_CONTENT_CHARS: usize = 4000;

/// Content is 1 to 4000 characters and not only white space; it may be empty when files
/// are attached.
pub fn validate_content(content: &str, has_files: bool) -> Result<(), AppError> {
    let blank = content.trim().is_empty();
    if (blank && !has_files) || content.chars().count() > MAX_CONTENT_CHARS {
        return Err(AppError::bad_request(
            ErrorCode::InvalidContent,
            format!("a message has 1 to {MAX_CONTENT_CHARS} characters, or files"),
        ));
    }
    Ok(())
}

/// Stores a message with its already-stored files in one transaction, then announces it.
/// Shared by REST and the socket.
///
/// With an idempotency `answer`, the key's answer is stored in the same transaction as the
/// message (and returned, to be sent as is): a crash cannot leave a message whose key would
/// let a retry post it again, and a request whose key was taken over posts nothing.
pub async fn post_message(
    state: &AppState,
    user_id: i32,
    channel_id: i32,
    content: String,
    stored: Vec<StoredFile>,
    client_id: Option<String>,
    answer: Option<Answer<MessageParts>>,
) -> Result<(MessageParts, Option<serde_json::Value>), AppError> {
    state
        .write_and_announce(move |conn| {
            // One event for the message, one per file.
            let seq = db::allocate_event_seq(conn, channel_id, 1 + stored.len() as i64)?;
            db::channels::find_for_member(conn, channel_id, user_id)?;
            let row = db::messages::insert(conn, channel_id, user_id, &content)?;
            let files = db::files::insert_all(conn, row.id, channel_id, user_id, &stored)?;
            let user = db::users::find(conn, user_id)?;
            let created = Event::MessageCreated {
                message: row.clone(),
                username: user.username.clone(),
                files: files.clone(),
                client_id,
            };
            let parts = (row, user.username, files.clone());
            let body = answer.map(|a| a.record(conn, &parts)).transpose()?;
            let completed = files
                .iter()
                .map(|file| Event::FileUploadComplete { file: file.clone() });
            let events = std::iter::once(created).chain(completed).collect();
            let announcement = Announcement {
                channel_id,
                first_seq: seq,
                events,
            };
            Ok(((parts, body), announcement))
        })
        .await
}

/// Records files already stored as attachments of the caller's message, announcing each;
/// an idempotency `answer` is stored with them, as in `post_message`.
pub async fn attach_files(
    state: &AppState,
    user_id: i32,
    message_id: i32,
    channel_id: i32,
    stored: Vec<StoredFile>,
    answer: Option<Answer<Vec<FileUpload>>>,
) -> Result<(Vec<FileUpload>, Option<serde_json::Value>), AppError> {
    state
        .write_and_announce(move |conn| {
            let seq = db::allocate_event_seq(conn, channel_id, stored.len() as i64)?;
            db::channels::find_for_member(conn, channel_id, user_id)?;
            let files = db::files::insert_all(conn, message_id, channel_id, user_id, &stored)?;
            let body = answer.map(|a| a.record(conn, &files)).transpose()?;
            let events = files
                .iter()
                .map(|file| Event::FileUploadComplete { file: file.clone() })
                .collect();
            let announcement = Announcement {
                channel_id,
                first_seq: seq,
                events,
            };
            Ok(((files, body), announcement))
        })
        .await
}

/// A file the user may see (a member of its channel, not deleted), else `not_found`.
pub async fn visible_file(
    state: &AppState,
    file_id: i32,
    user_id: i32,
) -> Result<FileUpload, AppError> {
    state
        .db
        .run(move |conn| Ok(db::files::find_visible(conn, file_id, user_id)?))
        .await
}

/// Deletes a file (its uploader only) and announces `file_deleted`; its object is purged
/// by the sweeper.
pub async fn delete_file(state: &AppState, user_id: i32, file_id: i32) -> Result<(), AppError> {
    let file = visible_file(state, file_id, user_id).await?;
    if file.uploaded_by != Some(user_id) {
        return Err(AppError::forbidden("only the uploader may delete a file"));
    }
    let channel_id = file.channel_id;
    let (id, message_id) = (file.id, file.message_id);
    state
        .write_and_announce(move |conn| {
            let seq = db::allocate_event_seq(conn, channel_id, 1)?;
            // Checked again under the channel's lock: the uploader may have just left.
            db::files::find_visible(conn, file_id, user_id)?;
            if !db::files::soft_delete(conn, file_id)? {
                return Err(AppError::NotFound);
            }
            let deleted = Event::FileDeleted {
                id,
                message_id,
                reason: DeletionReason::User,
            };
            Ok(((), Announcement::one(channel_id, seq, deleted)))
        })
        .await
}

/// A name as people will see and compare it: NFC, so "é" typed as one code point or as
/// "e" plus a combining accent is one name (macOS file names arrive decomposed).
pub fn normalize_name(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    raw.nfc().collect()
}

/// True for a name that shows nothing at all: only whitespace, zero-width, joiner, filler
/// or other default-ignorable characters (a "blank" display name impersonates nobody and
/// everybody; a blank file name is unclickable).
pub fn is_invisible_name(name: &str) -> bool {
    name.chars().all(is_invisible_char)
}

/// Whitespace, controls and Unicode's default-ignorable code points, plus the blank
/// fillers (Hangul, Braille) that render as nothing and are used as invisible names.
fn is_invisible_char(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}' | '\u{FFA0}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}')
}

/// Characters that must not appear in names shown to other users: control characters and
/// the bidirectional overrides that make text display differently from what it is.
pub fn is_unsafe_display_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_to_nfc() {
        let decomposed = "Rene\u{301}e.pdf";
        assert_eq!(normalize_name(decomposed), "Ren\u{e9}e.pdf");
        assert_eq!(normalize_name("plain"), "plain");
    }

    #[test]
    fn blank_names_are_recognised() {
        for blank in [
            "\u{200B}",
            "\u{3164}\u{3164}",
            " \u{2800} ",
            "\u{FEFF}\u{200D}",
            "\u{E0041}",
        ] {
            assert!(is_invisible_name(blank), "{blank:?}");
        }
        for visible in ["a", "\u{200B}b", "\u{1F600}", "\u{4E2D}"] {
            assert!(!is_invisible_name(visible), "{visible:?}");
        }
    }
}
