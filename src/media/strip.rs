//! Metadata stripping as a stream filter: location and camera metadata (EXIF, XMP,
//! comments, text chunks) leave JPEG, PNG and WebP images on their way into the store,
//! without re-encoding a pixel, and without ever holding more than one header segment.
//!
//! Why our own filter rather than `img-parts`: `img-parts` parses a whole file into memory
//! (the entropy-coded data included) before it can write it back, and uploads here are
//! streams. The formats make a streaming filter simple: each is a sequence of
//! length-prefixed segments or chunks, and the metadata ones can be told from their first
//! bytes.
//!
//! Memory: at most one JPEG segment (a JPEG segment is at most 65,535 bytes by format), a
//! PNG `eXIf` chunk or a WebP `EXIF` chunk of at most [`MAX_EXIF_BYTES`] (read for its
//! Orientation; a larger one is dropped — PNG — or zeroed — WebP — as it streams), plus
//! the chunk being passed on. Nothing else is buffered whatever the file's size.
//!
//! What goes:
//! - JPEG: APP1 EXIF and XMP (standard and extended), APP13 (Photoshop/IPTC), COM. Only the
//!   segments before the first scan: writers put metadata there, and what follows SOS is
//!   passed on untouched.
//! - PNG: `eXIf`, `tEXt`, `iTXt`, `zTXt`, wherever they are (before or after `IDAT`).
//! - WebP: the `EXIF` and `XMP ` chunks. A RIFF file states its length up front, so to stay a
//!   stream the chunks keep their size: `XMP ` (and an `EXIF` without orientation) becomes a
//!   chunk of zeros of an unknown type, which decoders skip by spec; the VP8X XMP flag is
//!   cleared.
//!
//! Orientation survives: an EXIF block whose Orientation is not 1 is replaced by a minimal
//! one holding only that tag (JPEG APP1, PNG `eXIf`, WebP `EXIF` padded with zeros).
//!
//! A file whose structure stops making sense (not an image after all, a truncated
//! segment, garbage between segments) is passed on unchanged from that point: it is kept
//! as a plain file, as the upload path keeps any file it cannot read as an image.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

/// The largest EXIF block read to find its Orientation.
pub const MAX_EXIF_BYTES: usize = 64 * 1024;

/// The chunk type WebP metadata chunks are renamed to: unknown, so decoders skip it.
const WEBP_PADDING: &[u8; 4] = b"PAD ";

/// The image formats whose metadata is stripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Webp,
}

impl ImageKind {
    /// The kind of a sniffed MIME type, if its metadata is stripped.
    pub fn of_mime(mime: &str) -> Option<ImageKind> {
        match mime {
            "image/jpeg" => Some(ImageKind::Jpeg),
            "image/png" => Some(ImageKind::Png),
            "image/webp" => Some(ImageKind::Webp),
            _ => None,
        }
    }
}

/// Strips `body` (the whole file, as a stream) of its metadata: see the module's doc.
///
/// For a stream whose MIME type is not [`ImageKind`], call nothing: pass it on as it is.
pub fn strip<S, E>(kind: ImageKind, body: S) -> Strip<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    Strip {
        inner: body,
        filter: Filter::new(kind),
        inner_done: false,
    }
}

/// Strips a whole file held in memory (tests, small objects).
pub fn strip_bytes(kind: ImageKind, file: &[u8]) -> Vec<u8> {
    let mut filter = Filter::new(kind);
    let mut out = BytesMut::new();
    filter.push(file, &mut out);
    filter.finish(&mut out);
    out.to_vec()
}

/// See [`strip`].
pub struct Strip<S> {
    inner: S,
    filter: Filter,
    inner_done: bool,
}

impl<S> Strip<S> {
    /// Whether what has passed so far differs from what came in (metadata went).
    pub fn changed(&self) -> bool {
        self.filter.changed
    }

    /// Whether the rest is passed on unchanged whatever it holds (a JPEG's first scan, a
    /// PNG's `IEND`, a file that is not an image after all): nothing more can change.
    pub fn settled(&self) -> bool {
        matches!(self.filter.state, State::Through)
    }
}

/// Whether stripping `body` would change it: read only as far as needed (a JPEG's
/// metadata comes before its first scan; PNG and WebP may carry theirs at the end).
pub async fn carries_metadata<S, E>(kind: ImageKind, body: S) -> Result<bool, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    use futures_util::StreamExt;
    let mut stripped = strip(kind, body);
    while !stripped.changed() && !stripped.settled() {
        match stripped.next().await {
            Some(chunk) => drop(chunk?),
            None => break,
        }
    }
    Ok(stripped.changed())
}

impl<S, E> Stream for Strip<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.inner_done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(chunk))) => {
                    let mut out = BytesMut::new();
                    self.filter.push(&chunk, &mut out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out.freeze())));
                    }
                    // A chunk that was all metadata (or all header): read on.
                }
                Poll::Ready(None) => {
                    self.inner_done = true;
                    let mut out = BytesMut::new();
                    self.filter.finish(&mut out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out.freeze())));
                    }
                }
            }
        }
    }
}

/// What the filter does with the next bytes.
#[derive(Debug)]
enum State {
    /// Collecting `want` bytes into `held`, then `decide`.
    Collect { want: usize, what: Pending },
    /// Passing `n` bytes on.
    Copy(u64),
    /// Dropping `n` bytes.
    Skip(u64),
    /// Passing on `n` zero bytes in place of the next `n` (WebP metadata chunks).
    Zero(u64),
    /// Passing everything on unchanged to the end.
    Through,
}

/// What the bytes being collected are.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// The file's signature (JPEG SOI, PNG signature, RIFF header).
    Signature,
    /// A JPEG marker and, unless standalone, its length.
    JpegMarker,
    /// A whole JPEG segment (marker, length and payload).
    JpegSegment,
    /// A PNG chunk's length and type.
    PngChunkHeader,
    /// A whole PNG `eXIf` chunk (header, data, CRC).
    PngExif,
    /// A WebP chunk's type and size.
    WebpChunkHeader,
    /// A whole VP8X chunk.
    WebpVp8x,
    /// A whole WebP `EXIF` chunk (header, data, padding).
    WebpExif,
}

struct Filter {
    kind: ImageKind,
    state: State,
    held: Vec<u8>,
    /// Something was dropped, replaced or zeroed.
    changed: bool,
}

impl Filter {
    fn new(kind: ImageKind) -> Self {
        let want = match kind {
            ImageKind::Jpeg => 2,
            ImageKind::Png => 8,
            ImageKind::Webp => 12,
        };
        Filter {
            kind,
            state: State::Collect {
                want,
                what: Pending::Signature,
            },
            held: Vec::new(),
            changed: false,
        }
    }

    fn push(&mut self, mut input: &[u8], out: &mut BytesMut) {
        while !input.is_empty() {
            match &mut self.state {
                State::Through => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Copy(n) | State::Skip(n) | State::Zero(n) => {
                    let take = (*n).min(input.len() as u64) as usize;
                    *n -= take as u64;
                    match self.state {
                        State::Copy(_) => out.extend_from_slice(&input[..take]),
                        State::Zero(_) => out.extend(std::iter::repeat_n(0u8, take)),
                        _ => {}
                    }
                    input = &input[take..];
                    if matches!(self.state, State::Copy(0) | State::Skip(0) | State::Zero(0)) {
                        self.state = self.next_header();
                    }
                }
                State::Collect { want, what } => {
                    let (want, what) = (*want, *what);
                    let take = (want - self.held.len()).min(input.len());
                    self.held.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.held.len() == want {
                        self.state = self.decide(what, out);
                    }
                }
            }
        }
    }

    /// The end of the file: whatever is held is passed on as it came.
    fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.held);
        self.held.clear();
        self.state = State::Through;
    }

    /// The state that reads the next segment or chunk header.
    fn next_header(&self) -> State {
        let (want, what) = match self.kind {
            ImageKind::Jpeg => (2, Pending::JpegMarker),
            ImageKind::Png => (8, Pending::PngChunkHeader),
            ImageKind::Webp => (8, Pending::WebpChunkHeader),
        };
        State::Collect { want, what }
    }

    /// Passes on what is held, and everything after it, unchanged.
    fn give_up(&mut self, out: &mut BytesMut) -> State {
        out.extend_from_slice(&self.held);
        self.held.clear();
        State::Through
    }

    /// Passes on what is held, then `n` more bytes.
    fn emit_then_copy(&mut self, n: u64, out: &mut BytesMut) -> State {
        out.extend_from_slice(&self.held);
        self.held.clear();
        if n == 0 {
            self.next_header()
        } else {
            State::Copy(n)
        }
    }

    /// Passes on `replacement` instead of what is held (a segment or chunk read whole). A
    /// replacement equal to it (an image stripped before: only its orientation is left) is
    /// no change.
    fn replace_held(&mut self, replacement: &[u8], out: &mut BytesMut) -> State {
        if replacement != self.held.as_slice() {
            self.changed = true;
        }
        out.extend_from_slice(replacement);
        self.held.clear();
        self.next_header()
    }

    fn drop_then_skip(&mut self, n: u64) -> State {
        self.changed = true;
        self.held.clear();
        if n == 0 {
            self.next_header()
        } else {
            State::Skip(n)
        }
    }

    fn decide(&mut self, what: Pending, out: &mut BytesMut) -> State {
        match what {
            Pending::Signature => {
                let ok = match self.kind {
                    ImageKind::Jpeg => self.held == [0xFF, 0xD8],
                    ImageKind::Png => self.held == *b"\x89PNG\r\n\x1a\n",
                    ImageKind::Webp => &self.held[..4] == b"RIFF" && &self.held[8..12] == b"WEBP",
                };
                if !ok {
                    return self.give_up(out);
                }
                self.emit_then_copy(0, out)
            }
            Pending::JpegMarker => self.jpeg_marker(out),
            Pending::JpegSegment => self.jpeg_segment(out),
            Pending::PngChunkHeader => self.png_chunk(out),
            Pending::PngExif => {
                let data = &self.held[8..self.held.len() - 4];
                let replacement = orientation_of(data)
                    .filter(|o| *o != 1)
                    .map(|o| png_chunk(b"eXIf", &minimal_tiff(o)))
                    .unwrap_or_default();
                self.replace_held(&replacement, out)
            }
            Pending::WebpChunkHeader => self.webp_chunk(out),
            Pending::WebpVp8x => {
                // Flags: the XMP bit (0x04) goes with the XMP chunk.
                if self.held[8] & 0x04 != 0 {
                    self.held[8] &= !0x04;
                    self.changed = true;
                }
                self.emit_then_copy(0, out)
            }
            Pending::WebpExif => {
                let size = self.held.len() - 8;
                let tiff = orientation_of(&self.held[8..])
                    .filter(|o| *o != 1)
                    .map(minimal_tiff)
                    .filter(|tiff| tiff.len() <= size);
                let mut replacement = Vec::with_capacity(self.held.len());
                match tiff {
                    Some(tiff) => {
                        replacement.extend_from_slice(&self.held[..8]);
                        replacement.extend_from_slice(&tiff);
                    }
                    None => {
                        replacement.extend_from_slice(WEBP_PADDING);
                        replacement.extend_from_slice(&self.held[4..8]);
                    }
                }
                replacement.resize(self.held.len(), 0);
                self.replace_held(&replacement, out)
            }
        }
    }

    fn jpeg_marker(&mut self, out: &mut BytesMut) -> State {
        if self.held[0] != 0xFF {
            return self.give_up(out);
        }
        match self.held[1] {
            // Fill bytes before a marker: keep one 0xFF and read on.
            0xFF => {
                self.held.truncate(1);
                State::Collect {
                    want: 2,
                    what: Pending::JpegMarker,
                }
            }
            // The first scan, or the end: what follows is passed on as it is.
            0xDA | 0xD9 => self.give_up(out),
            // Standalone markers: no length.
            0x01 | 0xD0..=0xD7 => self.emit_then_copy(0, out),
            0x00 => self.give_up(out),
            _ => State::Collect {
                want: 4,
                what: Pending::JpegSegment,
            },
        }
    }

    fn jpeg_segment(&mut self, out: &mut BytesMut) -> State {
        if self.held.len() == 4 {
            let length = u16::from_be_bytes([self.held[2], self.held[3]]) as usize;
            if length < 2 {
                return self.give_up(out);
            }
            // The whole segment, at most 65,537 bytes.
            return State::Collect {
                want: 2 + length,
                what: Pending::JpegSegment,
            };
        }
        let marker = self.held[1];
        let payload = &self.held[4..];
        let is_exif = marker == 0xE1 && payload.starts_with(b"Exif\0");
        let is_xmp = marker == 0xE1
            && (payload.starts_with(b"http://ns.adobe.com/xap/1.0/\0")
                || payload.starts_with(b"http://ns.adobe.com/xmp/extension/\0"));
        let drop = is_exif || is_xmp || marker == 0xED || marker == 0xFE;
        if !drop {
            return self.emit_then_copy(0, out);
        }
        let mut replacement = Vec::new();
        if is_exif
            && let Some(orientation) = payload.get(6..).and_then(orientation_of)
            && orientation != 1
        {
            let tiff = minimal_tiff(orientation);
            replacement.extend_from_slice(&[0xFF, 0xE1]);
            replacement.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
            replacement.extend_from_slice(b"Exif\0\0");
            replacement.extend_from_slice(&tiff);
        }
        self.replace_held(&replacement, out)
    }

    fn png_chunk(&mut self, out: &mut BytesMut) -> State {
        let length = u32::from_be_bytes([self.held[0], self.held[1], self.held[2], self.held[3]]);
        if length > i32::MAX as u32 {
            return self.give_up(out);
        }
        // Data and CRC.
        let rest = length as u64 + 4;
        match &self.held[4..8] {
            b"tEXt" | b"iTXt" | b"zTXt" => self.drop_then_skip(rest),
            b"eXIf" if (length as usize) <= MAX_EXIF_BYTES => State::Collect {
                want: 8 + length as usize + 4,
                what: Pending::PngExif,
            },
            b"eXIf" => self.drop_then_skip(rest),
            b"IEND" => {
                out.extend_from_slice(&self.held);
                self.held.clear();
                State::Through
            }
            _ => self.emit_then_copy(rest, out),
        }
    }

    fn webp_chunk(&mut self, out: &mut BytesMut) -> State {
        let size = u32::from_le_bytes([self.held[4], self.held[5], self.held[6], self.held[7]]);
        // Chunks are padded to an even size.
        let padded = size as u64 + (size as u64 & 1);
        match &self.held[..4] {
            b"VP8X" if size == 10 => State::Collect {
                want: 18,
                what: Pending::WebpVp8x,
            },
            b"EXIF" if (padded as usize) <= MAX_EXIF_BYTES => State::Collect {
                want: 8 + padded as usize,
                what: Pending::WebpExif,
            },
            b"EXIF" | b"XMP " => {
                self.changed = true;
                out.extend_from_slice(WEBP_PADDING);
                out.extend_from_slice(&self.held[4..8]);
                self.held.clear();
                if padded == 0 {
                    self.next_header()
                } else {
                    State::Zero(padded)
                }
            }
            _ => self.emit_then_copy(padded, out),
        }
    }
}

/// The Orientation (1..=8) of a TIFF-structured EXIF block, if it has one.
pub fn orientation_of(tiff: &[u8]) -> Option<u16> {
    let big_endian = match tiff.get(..4)? {
        b"MM\0*" => true,
        b"II*\0" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = tiff.get(at..at + 2)?;
        Some(if big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = tiff.get(at..at + 4)?;
        Some(if big_endian {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    };
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    (0..count).find_map(|i| {
        let entry = ifd + 2 + i * 12;
        (u16_at(entry)? == 0x0112 && u16_at(entry + 2)? == 3)
            .then(|| u16_at(entry + 8))
            .flatten()
            .filter(|o| (1..=8).contains(o))
    })
}

/// A TIFF block (big-endian) with one IFD holding only the Orientation.
pub fn minimal_tiff(orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0*".to_vec();
    tiff.extend_from_slice(&8u32.to_be_bytes());
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // one value
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    tiff
}

/// A PNG chunk: length, type, data, CRC over type and data.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    chunk.extend_from_slice(&crc.finalize().to_be_bytes());
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(payload);
        s
    }

    fn exif_with(orientation: u16) -> Vec<u8> {
        // Little-endian, two entries: a GPS-ish make string offset and Orientation.
        let mut tiff = b"II*\0".to_vec();
        tiff.extend_from_slice(&8u32.to_le_bytes());
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&0x010Fu16.to_le_bytes()); // Make
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&4u32.to_le_bytes());
        tiff.extend_from_slice(b"Cam\0");
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes());
        tiff
    }

    #[test]
    fn jpeg_metadata_goes_and_orientation_stays_whatever_the_chunking() {
        let mut file = vec![0xFF, 0xD8];
        file.extend(jpeg_segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
        file.extend(jpeg_segment(
            0xE1,
            &[b"Exif\0\0".as_slice(), &exif_with(6)].concat(),
        ));
        file.extend(jpeg_segment(
            0xE1,
            b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>",
        ));
        file.extend(jpeg_segment(0xED, b"Photoshop 3.0\0"));
        file.extend(jpeg_segment(0xFE, b"a comment"));
        file.extend(jpeg_segment(0xDB, &[0u8; 65]));
        file.extend([0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]);
        let stripped = strip_bytes(ImageKind::Jpeg, &file);
        let text = String::from_utf8_lossy(&stripped);
        assert!(!text.contains("Cam") && !text.contains("xmpmeta"));
        assert!(!text.contains("Photoshop") && !text.contains("comment"));
        assert!(text.contains("JFIF"));
        let exif_at = stripped.windows(6).position(|w| w == b"Exif\0\0").unwrap();
        assert_eq!(orientation_of(&stripped[exif_at + 6..]), Some(6));
        assert!(stripped.ends_with(&[0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]));
        // Byte by byte, the same.
        let mut filter = Filter::new(ImageKind::Jpeg);
        let mut out = BytesMut::new();
        for b in &file {
            filter.push(std::slice::from_ref(b), &mut out);
        }
        filter.finish(&mut out);
        assert_eq!(out.to_vec(), stripped);
    }

    #[tokio::test]
    async fn metadata_is_seen_and_a_stripped_file_carries_none() {
        let mut file = vec![0xFF, 0xD8];
        file.extend(jpeg_segment(
            0xE1,
            &[b"Exif\0\0".as_slice(), &exif_with(6)].concat(),
        ));
        file.extend(jpeg_segment(0xDB, &[0u8; 65]));
        file.extend([0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]);
        let stripped = strip_bytes(ImageKind::Jpeg, &file);
        assert_ne!(stripped, file);
        // In small chunks, as a store streams it.
        let chunks = |bytes: &[u8]| {
            let chunks: Vec<Result<Bytes, ()>> = bytes
                .chunks(7)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            futures_util::stream::iter(chunks)
        };
        assert_eq!(
            carries_metadata(ImageKind::Jpeg, chunks(&file)).await,
            Ok(true)
        );
        // What is left (the orientation alone) is kept as it is.
        assert_eq!(
            carries_metadata(ImageKind::Jpeg, chunks(&stripped)).await,
            Ok(false)
        );
        assert_eq!(strip_bytes(ImageKind::Jpeg, &stripped), stripped);
    }

    #[test]
    fn what_is_not_an_image_passes_unchanged() {
        let garbage =
            b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\x12\x34random".to_vec();
        assert_eq!(strip_bytes(ImageKind::Jpeg, &garbage), garbage);
        let short = b"\xff\xd8\xff".to_vec();
        assert_eq!(strip_bytes(ImageKind::Jpeg, &short), short);
        let png_like = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        assert_eq!(strip_bytes(ImageKind::Png, &png_like), png_like);
    }
}
