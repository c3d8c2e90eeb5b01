//! Audio containers told apart from video ones by their first bytes: a voice note recorded
//! by a browser (`MediaRecorder`) is WebM or Ogg with only an Opus track, and is shown as a
//! player for audio, not video.

/// The MIME type and extension `sniffed` (what `infer` found in `head`) should be instead,
/// if any: `audio/webm` for a WebM with audio tracks and no video track, `audio/ogg` for
/// Ogg Opus (`infer` says `audio/opus`, which browsers do not all take for an Ogg file).
pub fn refine(sniffed: &str, head: &[u8]) -> Option<(&'static str, &'static str)> {
    match sniffed {
        "video/webm" if webm_tracks(head) == Some((true, false)) => Some(("audio/webm", "webm")),
        "audio/opus" => Some(("audio/ogg", "ogg")),
        _ => None,
    }
}

// Matroska/WebM element ids (with their length marker bits, as written).
const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_TYPE: u32 = 0x83;
const CLUSTER: u32 = 0x1F43_B675;

/// `(has audio, has video)` from the `Tracks` element in `head`, or `None` when `head` ends
/// before it (or is not WebM).
fn webm_tracks(head: &[u8]) -> Option<(bool, bool)> {
    let mut at = 0;
    // The EBML header, then the Segment, whose children are read in turn.
    let (id, size, body) = element(head, at)?;
    if id != EBML {
        return None;
    }
    at = body.checked_add(size?)?;
    let (id, _, body) = element(head, at)?;
    if id != SEGMENT {
        return None;
    }
    at = body;
    loop {
        let (id, size, body) = element(head, at)?;
        match id {
            TRACKS => return Some(track_types(head, body, size)),
            CLUSTER => return None,
            _ => at = body.checked_add(size?)?,
        }
    }
}

fn track_types(head: &[u8], start: usize, size: Option<usize>) -> (bool, bool) {
    let end = size.map_or(head.len(), |s| (start + s).min(head.len()));
    let (mut audio, mut video) = (false, false);
    let mut at = start;
    while let Some((id, Some(size), body)) = element(head, at) {
        if body >= end {
            break;
        }
        if id == TRACK_ENTRY {
            let mut inner = body;
            let entry_end = (body + size).min(end);
            while let Some((id, Some(len), value)) = element(head, inner) {
                if value >= entry_end {
                    break;
                }
                if id == TRACK_TYPE && len == 1 {
                    match head.get(value) {
                        Some(1) => video = true,
                        Some(2) => audio = true,
                        _ => {}
                    }
                }
                inner = value + len;
            }
        }
        at = body + size;
    }
    (audio, video)
}

/// The element at `at`: its id, its size (`None`: unknown, as a live recording writes its
/// Segment), and where its body starts.
fn element(head: &[u8], at: usize) -> Option<(u32, Option<usize>, usize)> {
    let first = *head.get(at)?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return None;
    }
    let id = head
        .get(at..at + id_len)?
        .iter()
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    let size_at = at + id_len;
    let first = *head.get(size_at)?;
    let size_len = first.leading_zeros() as usize + 1;
    if size_len > 8 {
        return None;
    }
    let bytes = head.get(size_at..size_at + size_len)?;
    let mask = if size_len == 8 { 0 } else { 0xFFu8 >> size_len };
    let mut value = u64::from(bytes[0] & mask);
    let mut all_ones = bytes[0] & mask == mask;
    for b in &bytes[1..] {
        value = (value << 8) | u64::from(*b);
        all_ones &= *b == 0xFF;
    }
    let size = (!all_ones).then_some(usize::try_from(value).ok()).flatten();
    Some((id, size, size_at + size_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Chromium's MediaRecorder writes first for `audio/webm;codecs=opus`.
    fn recorded_webm(track_type: u8) -> Vec<u8> {
        let mut file = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F];
        file.extend([
            0x42, 0x86, 0x81, 0x01, 0x42, 0xF7, 0x81, 0x01, 0x42, 0xF2, 0x81, 0x04,
        ]);
        file.extend([
            0x42, 0xF3, 0x81, 0x08, 0x42, 0x82, 0x84, b'w', b'e', b'b', b'm',
        ]);
        file.extend([0x42, 0x87, 0x81, 0x04, 0x42, 0x85, 0x81, 0x02]);
        // Segment of unknown size, an Info, then Tracks with one entry.
        file.extend([
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        file.extend([0x15, 0x49, 0xA9, 0x66, 0x83, 0x2A, 0xD7, 0xB1]);
        let entry = [
            0xD7, 0x81, 0x01, 0x83, 0x81, track_type, 0x86, 0x86, b'A', b'_', b'O', b'P', b'U',
            b'S',
        ];
        file.extend([
            0x16,
            0x54,
            0xAE,
            0x6B,
            0x80 | (entry.len() as u8 + 2),
            0xAE,
            0x80 | entry.len() as u8,
        ]);
        file.extend(entry);
        file.extend([
            0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        file
    }

    #[test]
    fn webm_with_only_audio_is_audio() {
        assert_eq!(webm_tracks(&recorded_webm(2)), Some((true, false)));
        assert_eq!(
            refine("video/webm", &recorded_webm(2)),
            Some(("audio/webm", "webm"))
        );
        assert_eq!(refine("video/webm", &recorded_webm(1)), None);
        assert_eq!(refine("video/webm", &recorded_webm(2)[..30]), None);
        assert_eq!(refine("audio/opus", b"OggS"), Some(("audio/ogg", "ogg")));
    }
}
