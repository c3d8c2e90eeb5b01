//! Images: metadata stripped on the way in (`strip`), previews made in the background
//! (`previews`, run by `worker` from the database queue `db::media_jobs`).

pub mod previews;
pub mod sniff;
pub mod strip;
pub mod worker;

pub use strip::{ImageKind, Strip, carries_metadata, strip, strip_bytes};

use crate::storage::Presentation;

/// What a thumbnail's key adds to its file's: it lives beside the original, under the same
/// prefix, and is known by this suffix (`verify` leaves such keys to their file's row).
const THUMBNAIL_INFIX: &str = ".thumbnail.";

/// The key of the thumbnail of the object `key`.
pub fn thumbnail_key(key: &str, extension: &str) -> String {
    format!("{key}{THUMBNAIL_INFIX}{extension}")
}

pub fn is_thumbnail_key(key: &str) -> bool {
    key.rsplit_once(THUMBNAIL_INFIX)
        .is_some_and(|(_, ext)| matches!(ext, "jpg" | "webp"))
}

/// How a thumbnail is served: its own type, inline, named after its file.
pub fn thumbnail_presentation(file_name: &str, thumbnail_key: &str) -> Presentation {
    worker::presentation_of(file_name, thumbnail_key)
}
