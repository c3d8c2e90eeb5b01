//! Media: metadata stripped on the way in, previews made in the background. Images are
//! built here with the `image` crate, and their metadata segments by hand.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage, RgbaImage};
use reqwest::StatusCode;
use serde_json::Value;

use crate::direct_uploads;
use crate::fixtures::Upload;
use crate::helpers::{
    StoreKind, TestApp, TestUser, eventually, expect_json, for_each_store, recv_within,
    spawn_app_on,
};

for_each_store!(
    metadata_is_stripped_and_pixels_and_orientation_kept,
    metadata_is_kept_when_stripping_is_off,
    a_photo_gets_previews_under_the_rules_of_download_links,
    hostile_images_stay_plain_files_and_the_worker_carries_on,
    queued_jobs_survive_a_restart,
);

/// What no stripped file may contain anywhere.
const SECRETS: [&str; 4] = ["GPS-SECRET", "XMP-SECRET", "COMMENT-SECRET", "TEXT-SECRET"];

// ---------------------------------------------------------------------------------------
// Building images with metadata

fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A little-endian TIFF block: Orientation, and a GPS-looking string (the Make tag, whose
/// value is stored out of line, where a real camera's GPS block would be).
fn exif_tiff(orientation: u16) -> Vec<u8> {
    let secret = b"GPS-SECRET 48.8584 N 2.2945 E\0";
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes());
    tiff.extend(2u16.to_le_bytes());
    tiff.extend(0x010Fu16.to_le_bytes()); // Make, ASCII, out of line
    tiff.extend(2u16.to_le_bytes());
    tiff.extend((secret.len() as u32).to_le_bytes());
    tiff.extend((8 + 2 + 2 * 12 + 4u32).to_le_bytes());
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation, SHORT
    tiff.extend(3u16.to_le_bytes());
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_le_bytes());
    tiff.extend(secret);
    tiff
}

fn jpeg_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut segment = vec![0xFF, marker];
    segment.extend(((payload.len() + 2) as u16).to_be_bytes());
    segment.extend(payload);
    segment
}

/// A JPEG with EXIF (GPS-looking, orientation 6), XMP, a Photoshop block and a comment.
fn jpeg_with_metadata() -> Vec<u8> {
    let plain = encode(&DynamicImage::ImageRgb8(picture(64, 48)), ImageFormat::Jpeg);
    let mut file = plain[..2].to_vec();
    file.extend(jpeg_segment(
        0xE1,
        &[b"Exif\0\0".as_slice(), &exif_tiff(6)].concat(),
    ));
    file.extend(jpeg_segment(
        0xE1,
        b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>XMP-SECRET</x:xmpmeta>",
    ));
    file.extend(jpeg_segment(0xED, b"Photoshop 3.0\0TEXT-SECRET"));
    file.extend(jpeg_segment(0xFE, b"COMMENT-SECRET"));
    file.extend(&plain[2..]);
    file
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend(kind);
    chunk.extend(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    chunk.extend(crc.finalize().to_be_bytes());
    chunk
}

/// A PNG with `eXIf` (orientation 6) and `tEXt` before the pixels, `iTXt` after.
fn png_with_metadata() -> Vec<u8> {
    let plain = encode(&DynamicImage::ImageRgb8(picture(40, 30)), ImageFormat::Png);
    let after_ihdr = 8 + 8 + 13 + 4;
    let iend = plain.len() - 12;
    let mut file = plain[..after_ihdr].to_vec();
    file.extend(png_chunk(b"eXIf", &exif_tiff(6)));
    file.extend(png_chunk(b"tEXt", b"Comment\0TEXT-SECRET"));
    file.extend(&plain[after_ihdr..iend]);
    file.extend(png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0XMP-SECRET"));
    file.extend(&plain[iend..]);
    file
}

fn riff_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = kind.to_vec();
    chunk.extend((data.len() as u32).to_le_bytes());
    chunk.extend(data);
    if data.len() % 2 == 1 {
        chunk.push(0);
    }
    chunk
}

/// An extended WebP (VP8X) with its pixels (lossless), then `EXIF` (orientation 6) and
/// `XMP `, as the container spec orders them.
fn webp_with_metadata() -> Vec<u8> {
    let (width, height) = (30u32, 20u32);
    let plain = encode(
        &DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
            image::Rgba([(x * 8) as u8, (y * 12) as u8, 90, 255])
        })),
        ImageFormat::WebP,
    );
    assert_eq!(
        &plain[12..16],
        b"VP8L",
        "the encoder writes a simple lossless WebP"
    );
    let image_chunk = &plain[12..];
    let mut vp8x = vec![0x08 | 0x04, 0, 0, 0]; // EXIF and XMP flags
    vp8x.extend(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(riff_chunk(b"VP8X", &vp8x));
    body.extend(image_chunk);
    body.extend(riff_chunk(b"EXIF", &exif_tiff(6)));
    body.extend(riff_chunk(b"XMP ", b"<x:xmpmeta>XMP-SECRET</x:xmpmeta>"));
    let mut file = b"RIFF".to_vec();
    file.extend((body.len() as u32).to_le_bytes());
    file.extend(body);
    file
}

// ---------------------------------------------------------------------------------------
// Reading them back

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn pixels(bytes: &[u8]) -> DynamicImage {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .unwrap()
        .decode()
        .expect("the kept bytes decode")
}

/// The EXIF block and the orientation the `image` crate reads from a file.
fn exif_of(bytes: &[u8]) -> (Option<Vec<u8>>, image::metadata::Orientation) {
    let mut decoder = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    let exif = decoder.exif_metadata().unwrap();
    let orientation = decoder.orientation().unwrap();
    (exif, orientation)
}

/// How many entries the first IFD of a TIFF-structured EXIF block has (a WebP's is padded
/// with zeros to keep its chunk's size: its length says nothing).
fn ifd0_entries(exif: &[u8]) -> u16 {
    let big = exif.starts_with(b"MM");
    let u16_at = |at: usize| {
        let b = [exif[at], exif[at + 1]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let offset = exif[4..8].try_into().unwrap();
    let offset = if big {
        u32::from_be_bytes(offset)
    } else {
        u32::from_le_bytes(offset)
    };
    u16_at(offset as usize)
}

/// The JPEG segments before the first scan: `(marker, payload)`.
fn jpeg_segments(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut at = 2;
    let mut segments = Vec::new();
    while bytes[at] == 0xFF && bytes[at + 1] != 0xDA {
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        segments.push((bytes[at + 1], bytes[at + 4..at + 2 + length].to_vec()));
        at += 2 + length;
    }
    segments
}

fn png_chunk_types(bytes: &[u8]) -> Vec<String> {
    let mut at = 8;
    let mut types = Vec::new();
    while at + 8 <= bytes.len() {
        let length = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        types.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
        at += 12 + length;
    }
    types
}

fn riff_chunk_types(bytes: &[u8]) -> Vec<String> {
    let mut at = 12;
    let mut types = Vec::new();
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        types.push(String::from_utf8_lossy(&bytes[at..at + 4]).into_owned());
        at += 8 + size + size % 2;
    }
    types
}

/// Uploads `upload` in a message and returns its file JSON and the bytes a member
/// downloads through its link.
async fn upload_and_download(
    app: &TestApp,
    (alice, channel): (&TestUser, i64),
    upload: Upload,
) -> (Value, Vec<u8>) {
    let response = app.post_files(alice, channel, "a picture", &[upload]).await;
    let message = expect_json(response, StatusCode::CREATED).await;
    let file = message["files"][0].clone();
    let url = file["url"].as_str().unwrap();
    // A plain client that follows the S3 redirect.
    let response = reqwest::Client::new().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap().to_vec();
    (file, bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// The two ways a file reaches the store.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// Multipart through the server, stripped as it streams.
    Server,
    /// Straight to the store (`POST /api/uploads`), stripped at `complete`.
    Direct,
}

/// Sends `original` by `path` in a message; its file JSON and the bytes a member downloads.
async fn send(
    app: &TestApp,
    (alice, channel): (&TestUser, i64),
    path: Path,
    (name, mime, original): (&str, &str, &[u8]),
) -> (Value, Vec<u8>) {
    match path {
        Path::Server => {
            let upload = Upload::new(name, mime, original.to_vec());
            upload_and_download(app, (alice, channel), upload).await
        }
        Path::Direct => {
            let ready = direct_uploads::upload(app, alice, channel, name, original).await;
            let id = ready["id"].as_str().unwrap();
            let response = direct_uploads::attach(app, alice, channel, &[id]).await;
            let message = expect_json(response, StatusCode::CREATED).await;
            let file = message["files"][0].clone();
            let response = reqwest::Client::new()
                .get(file["url"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            // `complete` answered with what was kept, as the file row says.
            // The upload keeps the size its client declared (a client resuming matches it
            // with the file it holds); its file has the size kept.
            assert_eq!(ready["file_size"], original.len() as u64, "{name}");
            assert_eq!(ready["file"]["file_size"], file["file_size"], "{name}");
            assert_eq!(ready["file"]["sha256"], file["sha256"], "{name}");
            (file, response.bytes().await.unwrap().to_vec())
        }
    }
}

async fn metadata_is_stripped_and_pixels_and_orientation_kept(store: StoreKind) {
    let app = spawn_app_on(store, &[("MEDIA_WORKERS", "0")]).await;
    let (alice, _bob, channel) = app.two_members().await;
    let cases = [
        ("photo.jpg", "image/jpeg", jpeg_with_metadata()),
        ("shot.png", "image/png", png_with_metadata()),
        ("sticker.webp", "image/webp", webp_with_metadata()),
    ];
    for path in [Path::Server, Path::Direct] {
        for (name, mime, original) in &cases {
            let (file, kept) = send(&app, (&alice, channel), path, (name, mime, original)).await;
            check_stripped(&format!("{name} ({path:?})"), mime, original, &file, &kept);
            if matches!(path, Path::Direct) {
                // Stripped once: sent again as downloaded, it is kept byte for byte.
                let (again, same) = send(&app, (&alice, channel), path, (name, mime, &kept)).await;
                assert_eq!(same, kept, "{name}: a stripped image was rewritten");
                assert_eq!(again["sha256"], file["sha256"], "{name}");
            }
        }
    }
    // The direct uploads' objects with metadata were replaced, not left beside the kept ones:
    // one object per file (3 stripped, 3 sent again).
    assert_eq!(
        direct_uploads::staged_objects(&app).await.len(),
        2 * cases.len(),
        "objects left behind: {:?}",
        direct_uploads::staged_objects(&app).await
    );
}

/// The checks of one image stripped of its metadata: `file` is its JSON, `kept` its bytes.
fn check_stripped(name: &str, mime: &str, original: &[u8], file: &Value, kept: &[u8]) {
    for secret in SECRETS.iter().take(2) {
        assert!(contains(original, secret), "{name} is built with {secret}");
    }
    let (_, original_orientation) = exif_of(original);
    assert_eq!(original_orientation, image::metadata::Orientation::Rotate90);
    assert_eq!(file["content_type"], mime);
    for secret in SECRETS {
        assert!(!contains(kept, secret), "{name} still carries {secret}");
    }
    // What the row says describes the bytes kept.
    assert_eq!(file["file_size"], kept.len() as u64, "{name}");
    assert_eq!(file["sha256"], sha256_hex(kept), "{name}");
    // The same pixels, not re-encoded.
    assert_eq!(pixels(kept), pixels(original), "{name}: pixels changed");
    // Only the orientation is left of the EXIF block.
    let (exif, orientation) = exif_of(kept);
    assert_eq!(
        orientation,
        image::metadata::Orientation::Rotate90,
        "{name}"
    );
    let exif = exif.expect("an EXIF block with the orientation");
    assert_eq!(
        ifd0_entries(&exif),
        1,
        "{name}: more than the orientation is left"
    );
    match mime {
        "image/jpeg" => {
            let segments = jpeg_segments(kept);
            assert!(
                segments.iter().all(|(m, _)| *m != 0xFE && *m != 0xED),
                "{name}: a comment or APP13 is left"
            );
            let app1: Vec<_> = segments.iter().filter(|(m, _)| *m == 0xE1).collect();
            assert_eq!(app1.len(), 1, "{name}: one APP1, the orientation's");
        }
        "image/png" => {
            let types = png_chunk_types(kept);
            for gone in ["tEXt", "iTXt", "zTXt"] {
                assert!(!types.iter().any(|t| t == gone), "{name}: {types:?}");
            }
            assert!(types.iter().any(|t| t == "eXIf"), "{name}: {types:?}");
        }
        _ => {
            let types = riff_chunk_types(kept);
            assert!(!types.iter().any(|t| t == "XMP "), "{name}: {types:?}");
            // A RIFF file keeps its length: the chunks keep their sizes.
            assert_eq!(kept.len(), original.len());
        }
    }
}

async fn metadata_is_kept_when_stripping_is_off(store: StoreKind) {
    let app = spawn_app_on(
        store,
        &[("STRIP_IMAGE_METADATA", "false"), ("MEDIA_WORKERS", "0")],
    )
    .await;
    let (alice, _bob, channel) = app.two_members().await;
    for path in [Path::Server, Path::Direct] {
        for (name, mime, original) in [
            ("photo.jpg", "image/jpeg", jpeg_with_metadata()),
            ("shot.png", "image/png", png_with_metadata()),
            ("sticker.webp", "image/webp", webp_with_metadata()),
        ] {
            let (file, kept) = send(&app, (&alice, channel), path, (name, mime, &original)).await;
            assert_eq!(kept, original, "{name} ({path:?}) is kept byte for byte");
            assert_eq!(file["sha256"], sha256_hex(&original));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Previews

/// A camera-like photo: 3000x2000, EXIF orientation 1.
fn big_jpeg() -> Vec<u8> {
    encode(
        &DynamicImage::ImageRgb8(picture(3000, 2000)),
        ImageFormat::Jpeg,
    )
}

/// Waits for the `file_updated` of `file_id` and returns it as `viewer` receives it.
async fn file_updated(
    app: &TestApp,
    events: &mut tokio::sync::broadcast::Receiver<
        std::sync::Arc<chatserver::realtime::ChannelEvent>,
    >,
    viewer: &TestUser,
    file_id: &Value,
) -> Value {
    loop {
        let event = app.render(&recv_within(events, "file_updated").await, viewer);
        if event["type"] == "file_updated" && event["data"]["id"] == *file_id {
            return event;
        }
    }
}

async fn fetch_status(url: &str) -> (StatusCode, Vec<u8>) {
    let response = reqwest::Client::new().get(url).send().await.unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn a_photo_gets_previews_under_the_rules_of_download_links(store: StoreKind) {
    // Encoded first: a connection kept alive while this ran could be closed by then.
    let photo = big_jpeg();
    let app = spawn_app_on(store, &[("FILE_PURGE_AFTER_SECONDS", "0")]).await;
    let (alice, bob, channel) = app.two_members().await;
    let mut events = app.events().await;
    let response = app
        .post_files(
            &alice,
            channel,
            "holiday",
            &[Upload::new("big.jpg", "image/jpeg", photo)],
        )
        .await;
    let message = expect_json(response, StatusCode::CREATED).await;
    let file = &message["files"][0];
    // Nothing is known yet when the upload answers: previews are never on its path.
    assert_eq!(file["thumbnail_url"], Value::Null);
    let event = file_updated(&app, &mut events, &bob, &file["id"]).await;
    assert_eq!(event["channel_id"], channel);
    let updated = &event["data"];
    assert_eq!(
        (updated["width"].as_i64(), updated["height"].as_i64()),
        (Some(3000), Some(2000))
    );
    let hash = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        updated["preview"].as_str().expect("a preview"),
    )
    .unwrap();
    let (w, h, _) = thumbhash::thumb_hash_to_rgba(&hash).expect("a ThumbHash");
    assert!(w > h, "the placeholder keeps the aspect ratio: {w}x{h}");
    // Bob's thumbnail link is Bob's: it decodes to a picture of at most 400 px.
    let thumbnail_url = updated["thumbnail_url"].as_str().unwrap().to_owned();
    assert!(thumbnail_url.contains(&format!("token={}.{}.", updated["id"], bob.id)));
    let (status, bytes) = fetch_status(&thumbnail_url).await;
    assert_eq!(status, StatusCode::OK);
    let thumbnail = pixels(&bytes);
    assert_eq!((thumbnail.width(), thumbnail.height()), (400, 267));
    // The file's own JSON says the same.
    let shown = expect_json(
        app.get(&format!("/api/files/{}", file["id"]), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["width"], 3000);
    assert_eq!(shown["preview"], updated["preview"]);
    let alice_thumbnail = shown["thumbnail_url"].as_str().unwrap().to_owned();
    // A stranger's link, however obtained, does not open it; nor does a forged one.
    let carol = app.register("carol").await;
    let file_row = app
        .state
        .db
        .run({
            let id = file["id"].as_i64().unwrap() as i32;
            move |conn| Ok(chatserver::db::files::find(conn, id)?.unwrap())
        })
        .await
        .unwrap();
    let carols = app
        .state
        .links
        .file_view(&app.address, carol.id as i32, &file_row);
    let (status, _) = fetch_status(carols.thumbnail_url.as_deref().unwrap()).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a non-member fetched the thumbnail"
    );
    let forged = thumbnail_url.replacen(&format!(".{}.", bob.id), &format!(".{}.", carol.id), 1);
    assert_eq!(fetch_status(&forged).await.0, StatusCode::FORBIDDEN);
    // Bob leaves: his link dies with his membership.
    let left = app
        .delete(&format!("/api/channels/{channel}/members/me"), &bob.token)
        .await;
    assert!(left.status().is_success(), "{}", left.status());
    assert_eq!(fetch_status(&thumbnail_url).await.0, StatusCode::NOT_FOUND);
    // Deleted: Alice's dies too, and the sweeper purges the thumbnail with its file.
    let thumbnail_key = file_row.thumbnail_key.clone().unwrap();
    assert!(app.object_keys().await.contains(&thumbnail_key));
    let deleted = app
        .delete(&format!("/api/files/{}", file["id"]), &alice.token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        fetch_status(&alice_thumbnail).await.0,
        StatusCode::NOT_FOUND
    );
    let sweeper = chatserver::gc::Sweeper::from(&app.state);
    let report = chatserver::gc::sweep(&sweeper).await.unwrap();
    assert_eq!(report.purged, 1);
    let keys = app.object_keys().await;
    assert!(
        !keys.contains(&thumbnail_key),
        "the thumbnail outlived its file: {keys:?}"
    );
    assert!(!keys.contains(&file_row.s3_key));
}

/// A PNG of `width`x`height` whose pixel data is one tiny zlib stream: whatever it claims,
/// the file is a few bytes.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut file = b"\x89PNG\r\n\x1a\n".to_vec();
    file.extend(png_chunk(b"IHDR", &ihdr));
    // zlib: an empty stored block, then the end; a decoder would find the data short.
    file.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1],
    ));
    file.extend(png_chunk(b"IEND", &[]));
    file
}

/// A GIF whose screen is 30000x30000 with 10,000 one-pixel frames.
fn gif_bomb() -> Vec<u8> {
    let mut file = b"GIF89a".to_vec();
    file.extend(30000u16.to_le_bytes());
    file.extend(30000u16.to_le_bytes());
    file.extend([0x80, 0, 0]); // a global colour table of 2
    file.extend([0, 0, 0, 255, 255, 255]);
    for _ in 0..10_000 {
        file.push(0x2C);
        file.extend([0, 0, 0, 0, 1, 0, 1, 0, 0]);
        file.extend([2, 2, 0x44, 0x01, 0]); // LZW: min code 2, one block
    }
    file.push(0x3B);
    file
}

async fn hostile_images_stay_plain_files_and_the_worker_carries_on(store: StoreKind) {
    let whole = encode(
        &DynamicImage::ImageRgb8(picture(300, 200)),
        ImageFormat::Jpeg,
    );
    // A PNG that decompresses to 4 Mpx from a few kilobytes: over the limit from its header.
    let zip_bomb = encode(
        &DynamicImage::ImageRgb8(RgbImage::new(2000, 2000)),
        ImageFormat::Png,
    );
    let app = spawn_app_on(store, &[("MAX_IMAGE_PIXELS", "1000000")]).await;
    let (alice, bob, channel) = app.two_members().await;
    let mut events = app.events().await;
    assert!(zip_bomb.len() < 100_000);
    let hostile = [
        Upload::new("huge.png", "image/png", png_claiming(100_000, 100_000)),
        Upload::new("cut.jpg", "image/jpeg", whole[..whole.len() / 2].to_vec()),
        Upload::new("frames.gif", "image/gif", gif_bomb()),
        Upload::new("bomb.png", "image/png", zip_bomb),
    ];
    let response = app.post_files(&alice, channel, "hostile", &hostile).await;
    let message = expect_json(response, StatusCode::CREATED).await;
    let files = message["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 4, "every file is kept");
    // Then a good one: its previews come, so the worker got past the others.
    let response = app
        .post_files(
            &alice,
            channel,
            "fine",
            &[Upload::new(
                "fine.png",
                "image/png",
                encode(&DynamicImage::ImageRgb8(picture(90, 60)), ImageFormat::Png),
            )],
        )
        .await;
    let fine = expect_json(response, StatusCode::CREATED).await;
    let event = file_updated(&app, &mut events, &bob, &fine["files"][0]["id"]).await;
    assert_eq!(event["data"]["width"], 90);
    let queue_empty = eventually(async || {
        app.state
            .db
            .run(|conn| Ok(chatserver::db::media_jobs::pending(conn)?))
            .await
            .unwrap()
            == 0
    })
    .await;
    assert!(queue_empty, "jobs left in the queue");
    for file in &files {
        let shown = expect_json(
            app.get(&format!("/api/files/{}", file["id"]), &bob.token)
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(shown["thumbnail_url"], Value::Null, "{shown}");
        assert_eq!(shown["preview"], Value::Null, "{shown}");
        // Still a file anyone in the channel downloads.
        let (status, bytes) = fetch_status(shown["url"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bytes.len() as u64, shown["file_size"].as_u64().unwrap());
    }
}

async fn queued_jobs_survive_a_restart(store: StoreKind) {
    // The first instance makes no previews, as if it died before getting to them.
    let app = spawn_app_on(store, &[("MEDIA_WORKERS", "0")]).await;
    let (alice, _bob, channel) = app.two_members().await;
    let uploads: Vec<Upload> = (0..3)
        .map(|i| {
            let bytes = encode(
                &DynamicImage::ImageRgb8(picture(120 + i, 80)),
                ImageFormat::Png,
            );
            Upload::new(&format!("p{i}.png"), "image/png", bytes)
        })
        .collect();
    let message = expect_json(
        app.post_files(&alice, channel, "queued", &uploads).await,
        StatusCode::CREATED,
    )
    .await;
    let pending = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            db.run(|conn| Ok(chatserver::db::media_jobs::pending(conn)?))
                .await
                .unwrap()
        }
    };
    assert_eq!(pending(&app).await, 3);
    // One job was claimed by a worker that then died: its lease has run out.
    let claimed = app
        .state
        .db
        .write(|conn| {
            Ok(chatserver::db::media_jobs::claim(
                conn,
                chrono::TimeDelta::seconds(-1),
            )?)
        })
        .await
        .unwrap();
    assert!(claimed.is_some());
    // The next instance of the deployment (same database and store) finishes them all.
    let restarted = app.spawn_peer(&[("MEDIA_WORKERS", "1")]).await;
    let done = eventually(async || pending(&restarted).await == 0).await;
    assert!(done, "jobs left after the restart");
    for (i, file) in message["files"].as_array().unwrap().iter().enumerate() {
        let shown = expect_json(
            restarted
                .get(&format!("/api/files/{}", file["id"]), &alice.token)
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(shown["width"], 120 + i as u64, "{shown}");
        assert_eq!(shown["height"], 80);
        assert!(shown["thumbnail_url"].is_string(), "{shown}");
    }
}
