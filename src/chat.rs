//! The chat core: what a message is allowed to be, and posting it. REST handlers and the
//! WebSocket session both call this; it knows the database and the event bus, not HTTP.

use crate::db;
use crate::db::models::{Channel, FileUpload, MessageParts, MessageRow, StoredFile, User};
use crate::error::{AppError, ErrorCode};
use crate::idempotency::Answer;
use crate::realtime::{DeletionReason, Event, ReactionChange};
use crate::state::{Announcement, AppState};

pub const MAX_CONTENT_CHARS: usize = 4000;
/// Distinct emoji on one message at most.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 20;
/// Messages that mention everyone (`@channel`) per user per channel per minute (a post, or
/// an edit that adds `@channel`); beyond, `429 rate_limited`. Counted per instance.
pub const EVERYONE_MENTIONS_PER_MINUTE: u32 = 1;

/// Refuses a message that newly mentions everyone if its author did so in this channel
/// less than a minute ago (`EVERYONE_MENTIONS_PER_MINUTE`).
fn check_everyone_mention(
    limiter: &crate::ratelimit::RateLimiter<(i32, i32)>,
    user_id: i32,
    channel_id: i32,
    content: &str,
    before: Option<&str>,
) -> Result<(), AppError> {
    let new = db::mentions::mentions_everyone(content)
        && !before.is_some_and(db::mentions::mentions_everyone);
    if new {
        limiter
            .check((user_id, channel_id))
            .map_err(|retry_after_seconds| AppError::RateLimited {
                retry_after_seconds,
            })?;
    }
    Ok(())
}

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

/// What a new message carries: files the request stored (multipart), and direct uploads
/// (`upload_ids`) checked and claimed in the message's transaction.
#[derive(Debug, Default)]
pub struct Attachments {
    pub stored: Vec<StoredFile>,
    pub upload_ids: Vec<String>,
}

impl From<Vec<StoredFile>> for Attachments {
    fn from(stored: Vec<StoredFile>) -> Self {
        Attachments {
            stored,
            upload_ids: Vec::new(),
        }
    }
}

/// Stores a message with its already-stored files in one transaction, then announces it.
/// Shared by REST and the socket. With `thread_id`, the message is a reply in the thread of
/// that top-level message of the channel (anything else is `400 bad_request`), and the
/// root's new `reply_count` is announced as `message_updated` after the reply's events.
///
/// With an idempotency `answer`, the key's answer is stored in the same transaction as the
/// message (and returned, to be sent as is): a crash cannot leave a message whose key would
/// let a retry post it again, and a request whose key was taken over posts nothing.
#[allow(clippy::too_many_arguments)]
pub async fn post_message(
    state: &AppState,
    user_id: i32,
    channel_id: i32,
    content: String,
    thread_id: Option<i32>,
    files: impl Into<Attachments>,
    client_id: Option<String>,
    answer: Option<Answer<MessageParts>>,
) -> Result<(MessageParts, Option<serde_json::Value>), AppError> {
    let limits = state.everyone_mentions.clone();
    let Attachments {
        mut stored,
        upload_ids,
    } = files.into();
    state
        .write_and_announce(move |conn| {
            // One event for the message, one per file, one for the thread's root.
            let count =
                1 + stored.len() as i64 + upload_ids.len() as i64 + i64::from(thread_id.is_some());
            let seq = db::allocate_event_seq(conn, channel_id, count)?;
            let channel = db::channels::find_for_member(conn, channel_id, user_id)?;
            // Direct uploads: claimed (ready -> attached) here, so an invalid one rolls the
            // whole message back, and one upload can never end up in two messages.
            let claimed = crate::direct::claim_for_message(conn, user_id, channel_id, &upload_ids)?;
            stored.extend(claimed.iter().map(|(_, file)| file.clone()));
            check_everyone_mention(&limits, user_id, channel_id, &content, None)?;
            // A new message shows a hidden DM again, to both of its users.
            if channel.kind == db::models::KIND_DM {
                db::channels::unhide_for_all(conn, channel_id)?;
            }
            if let Some(root_id) = thread_id {
                let root = db::messages::find_in_channel(conn, channel_id, root_id)
                    .map_err(AppError::from);
                match root {
                    Ok(root) if root.thread_id.is_none() => {}
                    Ok(_) | Err(AppError::NotFound) => {
                        return Err(AppError::bad_request(
                            ErrorCode::BadRequest,
                            "thread_id must be a top-level message of this channel",
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            let row = db::messages::insert(conn, channel_id, user_id, &content, thread_id)?;
            let files = db::files::insert_all(conn, row.id, channel_id, user_id, &stored)?;
            // insert_all keeps the order: the claimed uploads' rows come last.
            let first_claimed = files.len() - claimed.len();
            for ((id, _), file) in claimed.iter().zip(&files[first_claimed..]) {
                db::uploads::set_file_id(conn, id, file.id)?;
            }
            let mentions = db::mentions::resolve(conn, channel_id, user_id, &content)?;
            // A new message has no mentions to replace: most posts write nothing here.
            if !mentions.is_empty() {
                db::mentions::set(conn, row.id, channel_id, &mentions)?;
            }
            if let Some(root_id) = thread_id {
                db::messages::count_reply(conn, root_id, row.created_at)?;
            }
            let user = db::users::find(conn, user_id)?;
            let parts = MessageParts {
                row,
                username: user.username,
                display_name: user.display_name,
                files,
                reactions: Vec::new(),
                mentions,
            };
            let created = Event::MessageCreated {
                message: parts.clone(),
                client_id,
            };
            let body = answer.map(|a| a.record(conn, &parts)).transpose()?;
            let mut events = vec![created];
            events.extend(
                parts
                    .files
                    .iter()
                    .map(|file| Event::FileUploadComplete { file: file.clone() }),
            );
            if let Some(root_id) = thread_id {
                let root = db::messages::parts(conn, root_id)?;
                events.push(Event::MessageUpdated { message: root });
            }
            let announcement = Announcement {
                channel_id,
                first_seq: seq,
                events,
            };
            Ok(((parts, body), announcement))
        })
        .await
}

/// Replaces a message's content (its author only) and announces `message_updated`. The
/// previous content is not kept. The content rules are those of a post: a message with
/// files may be emptied.
pub async fn edit_message(
    state: &AppState,
    user_id: i32,
    channel_id: i32,
    message_id: i32,
    content: String,
) -> Result<MessageParts, AppError> {
    let limits = state.everyone_mentions.clone();
    state
        .write_and_announce(move |conn| {
            let seq = db::allocate_event_seq(conn, channel_id, 1)?;
            let row = visible_message(conn, user_id, channel_id, message_id)?;
            if row.user_id != user_id {
                return Err(AppError::forbidden("only the author may edit a message"));
            }
            let has_files = !db::files::live_for_messages(conn, &[message_id])?.is_empty();
            validate_content(&content, has_files)?;
            check_everyone_mention(&limits, user_id, channel_id, &content, Some(&row.content))?;
            db::messages::edit(conn, message_id, &content)?;
            // Mentions follow the content: recomputed from the new text.
            let mentions = db::mentions::resolve(conn, channel_id, row.user_id, &content)?;
            db::mentions::set(conn, message_id, channel_id, &mentions)?;
            let parts = db::messages::parts(conn, message_id)?;
            let updated = Event::MessageUpdated {
                message: parts.clone(),
            };
            Ok((parts, Announcement::one(channel_id, seq, updated)))
        })
        .await
}

/// Deletes a message (its author only): its files are deleted with it (`file_deleted`
/// each; the sweeper purges their objects), then `message_deleted`. A top-level message
/// takes its thread with it: each reply's files and the reply itself are announced the
/// same way, before the root. A reply's root announces its new `reply_count` last, as
/// `message_updated`.
pub async fn delete_message(
    state: &AppState,
    user_id: i32,
    channel_id: i32,
    message_id: i32,
) -> Result<(), AppError> {
    state
        .write_and_announce(move |conn| {
            // Locks the channel without taking a number: how many events depends on what
            // goes. (An error rolls back, so no number is ever lost.)
            db::allocate_event_seq(conn, channel_id, 0)?;
            let row = visible_message(conn, user_id, channel_id, message_id)?;
            if row.user_id != user_id {
                return Err(AppError::forbidden("only the author may delete a message"));
            }
            let mut doomed: Vec<(i32, Option<i32>)> = match row.thread_id {
                None => db::messages::live_replies(conn, message_id)?
                    .into_iter()
                    .map(|id| (id, Some(message_id)))
                    .collect(),
                Some(_) => Vec::new(),
            };
            doomed.push((message_id, row.thread_id));
            let ids: Vec<i32> = doomed.iter().map(|(id, _)| *id).collect();
            let mut files: Vec<FileUpload> = db::files::live_for_messages(conn, &ids)?
                .into_values()
                .flatten()
                .collect();
            files.sort_by_key(|f| f.id);
            let mut events = Vec::with_capacity(files.len() + doomed.len() + 1);
            for file in &files {
                db::files::soft_delete(conn, file.id)?;
                events.push(Event::FileDeleted {
                    id: file.id,
                    message_id: file.message_id,
                    reason: DeletionReason::MessageDeleted,
                });
            }
            db::messages::soft_delete(conn, &ids)?;
            events.extend(
                doomed
                    .into_iter()
                    .map(|(id, thread_id)| Event::MessageDeleted { id, thread_id }),
            );
            if let Some(root_id) = row.thread_id {
                db::messages::recount_replies(conn, root_id)?;
                let root = db::messages::parts(conn, root_id)?;
                events.push(Event::MessageUpdated { message: root });
            }
            let seq = db::allocate_event_seq(conn, channel_id, events.len() as i64)?;
            let announcement = Announcement {
                channel_id,
                first_seq: seq,
                events,
            };
            Ok(((), announcement))
        })
        .await
}

/// Adds (`add`) or removes the caller's reaction with `emoji` (already validated with
/// `emoji::validate`). Idempotent: adding a reaction that is there, or removing one that
/// is not, changes nothing and announces nothing. A message has at most
/// `MAX_REACTIONS_PER_MESSAGE` distinct emoji.
pub async fn react(
    state: &AppState,
    user_id: i32,
    channel_id: i32,
    message_id: i32,
    emoji: String,
    add: bool,
) -> Result<(), AppError> {
    state
        .write_and_announce(move |conn| {
            // Locks the channel; a number is taken only if something changes.
            db::allocate_event_seq(conn, channel_id, 0)?;
            visible_message(conn, user_id, channel_id, message_id)?;
            let changed = if add {
                if db::reactions::exists(conn, message_id, user_id, &emoji)? {
                    false
                } else {
                    let present = db::reactions::emoji_of(conn, message_id)?;
                    if !present.contains(&emoji) && present.len() >= MAX_REACTIONS_PER_MESSAGE {
                        return Err(AppError::bad_request(
                            ErrorCode::TooManyReactions,
                            format!(
                                "a message has at most {MAX_REACTIONS_PER_MESSAGE} different reactions"
                            ),
                        ));
                    }
                    db::reactions::insert(conn, message_id, user_id, &emoji)?;
                    true
                }
            } else {
                db::reactions::delete(conn, message_id, user_id, &emoji)?
            };
            if !changed {
                return Ok(((), Announcement::none(channel_id)));
            }
            let seq = db::allocate_event_seq(conn, channel_id, 1)?;
            let user = db::users::find(conn, user_id)?;
            let change = ReactionChange {
                message_id,
                emoji,
                user_id,
                display_name: user.display_name,
            };
            let event = if add {
                Event::ReactionAdded(change)
            } else {
                Event::ReactionRemoved(change)
            };
            Ok(((), Announcement::one(channel_id, seq, event)))
        })
        .await
}

/// Moves the user's read position in the channel forward to `message_id` (never back) and
/// tells the user's own sockets (on every instance) with `read_updated` when it moved.
/// `not_found` unless the user is a member and the message one of the channel's.
pub async fn mark_read(
    state: &AppState,
    user_id: i32,
    channel_id: i32,
    message_id: i32,
) -> Result<i32, AppError> {
    let (last_read_id, moved) = state
        .db
        .write(move |conn| {
            db::channels::find_for_member(conn, channel_id, user_id)?;
            Ok(db::reads::mark_read(conn, channel_id, user_id, message_id)?)
        })
        .await?;
    if moved {
        let event = Event::ReadUpdated {
            user_id,
            last_read_id,
        };
        state.events.publish_ephemeral(channel_id, event).await;
    }
    Ok(last_read_id)
}

/// A message of the channel that `user_id` may see: a member's, not deleted; else
/// `not_found`.
fn visible_message(
    conn: &mut db::AnyConnection,
    user_id: i32,
    channel_id: i32,
    message_id: i32,
) -> Result<MessageRow, AppError> {
    db::channels::find_for_member(conn, channel_id, user_id)?;
    Ok(db::messages::find_in_channel(conn, channel_id, message_id)?)
}

/// The replies of a top-level message the user may see, oldest first, after `after`.
/// A reply has no thread of its own: `400 bad_request`.
pub async fn thread(
    state: &AppState,
    user_id: i32,
    channel_id: i32,
    message_id: i32,
    after: Option<i32>,
    limit: i64,
) -> Result<db::messages::Page, AppError> {
    state
        .db
        .run(move |conn| {
            let root = visible_message(conn, user_id, channel_id, message_id)?;
            if root.thread_id.is_some() {
                return Err(AppError::bad_request(
                    ErrorCode::BadRequest,
                    "a reply has no thread of its own: ask for its thread_id's",
                ));
            }
            Ok(db::messages::thread_page(conn, message_id, after, limit)?)
        })
        .await
}

/// The direct-message channel of the caller and `username`, created if there is none:
/// `(channel, created)`. One per pair, whoever asks and however many ask at once: the
/// channel's `dm_key` is unique, and the loser of a race reads the winner's channel. A new
/// one announces `member_joined` for both users (the smaller id first, whoever created
/// it), so their open sockets follow it: each socket's first event of the channel is its
/// own user's join.
pub async fn open_dm(
    state: &AppState,
    user_id: i32,
    username: String,
) -> Result<(Channel, bool), AppError> {
    let other = state
        .db
        .run(move |conn| Ok(db::users::find_by_username(conn, &username)?))
        .await?
        .ok_or(AppError::NotFound)?;
    if other.id == user_id {
        return Err(AppError::bad_request(
            ErrorCode::BadRequest,
            "a direct message is between two different users",
        ));
    }
    let other_id = other.id;
    let key = db::channels::dm_key(user_id, other_id);
    let existing = {
        let key = key.clone();
        state
            .db
            .run(move |conn| Ok(db::channels::find_dm(conn, &key)?))
            .await?
    };
    if let Some(channel) = existing {
        // Opening it again shows it again, if the caller had hidden it.
        let channel_id = channel.id;
        state
            .db
            .write(move |conn| Ok(db::channels::set_hidden(conn, channel_id, user_id, false)?))
            .await?;
        return Ok((channel, false));
    }
    let created = {
        let key = key.clone();
        state
            .write_and_announce(move |conn| {
                // Created meanwhile (the SQLite writer runs writes one after another).
                if let Some(channel) = db::channels::find_dm(conn, &key)? {
                    return Ok(((channel, false), Announcement::none(0)));
                }
                let me = db::users::find(conn, user_id)?;
                // By id, whoever created it: the same channel looks the same to both.
                let (first, second) = if me.id < other.id {
                    (me, other)
                } else {
                    (other, me)
                };
                let name = format!("{}, {}", first.username, second.username);
                let channel = db::channels::create_dm(conn, &name, &key, user_id, other_id)?;
                let seq = db::allocate_event_seq(conn, channel.id, 2)?;
                let events = vec![
                    Event::MemberJoined { user: first },
                    Event::MemberJoined { user: second },
                ];
                let announcement = Announcement {
                    channel_id: channel.id,
                    first_seq: seq,
                    events,
                };
                Ok(((channel, true), announcement))
            })
            .await
    };
    match created {
        // Created at the same moment by the other user (PostgreSQL: the unique key).
        Err(AppError::Conflict { .. }) => {
            let channel = state
                .db
                .run(move |conn| Ok(db::channels::find_dm(conn, &key)?))
                .await?
                .ok_or_else(|| {
                    AppError::Internal(anyhow::anyhow!("a DM conflicted and vanished"))
                })?;
            Ok((channel, false))
        }
        other => other,
    }
}

/// Changes the caller's display name (already cleaned).
pub async fn set_display_name(
    state: &AppState,
    user_id: i32,
    display_name: String,
) -> Result<User, AppError> {
    let (user, channels) = state
        .db
        .write(move |conn| {
            let user = db::users::set_display_name(conn, user_id, &display_name)?;
            let channels = db::channels::subscriptions(conn, user_id)?;
            Ok((user, channels))
        })
        .await?;
    // Everyone who shares a channel with the user sees the new name at once; the channel's
    // followers are exactly those people, and no list of them is built here.
    for (channel_id, _) in channels {
        let event = Event::UserUpdated { user: user.clone() };
        state.events.publish_ephemeral(channel_id, event).await;
    }
    Ok(user)
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
            // Checked again under the channel's lock: the message may have just gone.
            visible_message(conn, user_id, channel_id, message_id)?;
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

/// Hides a direct message from the caller's sidebar (every tab: `dm_hidden`); the next
/// message in it, or opening it again, shows it again. Other channels are left, not hidden:
/// `400 bad_request`.
pub async fn hide_dm(state: &AppState, user_id: i32, channel_id: i32) -> Result<(), AppError> {
    state
        .db
        .write(move |conn| {
            let channel = db::channels::find_for_member(conn, channel_id, user_id)?;
            if channel.kind != db::models::KIND_DM {
                return Err(AppError::bad_request(
                    ErrorCode::BadRequest,
                    "only a direct message is hidden; leave a channel instead",
                ));
            }
            db::channels::set_hidden(conn, channel_id, user_id, true)?;
            Ok(())
        })
        .await?;
    let event = Event::DmHidden { user_id };
    state.events.publish_ephemeral(channel_id, event).await;
    Ok(())
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
