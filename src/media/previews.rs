//! An image's previews: its displayed size, a thumbnail and a ThumbHash placeholder.
//! Pure and synchronous (the worker runs it on the blocking pool); every limit is checked
//! from the header before a pixel is decoded.
//!
//! Crates, and why:
//! - `mozjpeg` (libjpeg-turbo's decoder, built from source by `mozjpeg-sys` with the C
//!   compiler alone: no nasm, no SIMD) for JPEG: it decodes at 1/8..1 scale in the IDCT (the
//!   trick vipsthumbnail relies on), so a 12 Mpx photo is decoded as ~0.2 Mpx, and its
//!   Huffman decoding is what libvips itself runs. `jpeg-decoder` scales too, but made
//!   0.77x vipsthumbnail's thumbnails per CPU-second (release build, scripts/bench-thumbs.sh)
//!   where this makes 1.4-1.6x; `zune-jpeg` is fast but cannot scale, so it decodes all
//!   12 Mpx.
//! - `image` 0.25 for PNG, WebP and GIF (first frame only), with `Limits`, for orientation
//!   and for encoding the thumbnail (JPEG, or lossless WebP when the image has alpha).
//!   Resizing uses `image`'s own filters: the inputs are already small after a scaled JPEG
//!   decode, and `fast_image_resize` would add a build for little gain here.
//! - `thumbhash`: a ~25-byte placeholder that keeps aspect ratio and alpha (BlurHash has
//!   neither).

use std::io::Cursor;

use base64::Engine;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// The long side of a thumbnail.
pub const THUMBNAIL_SIDE: u32 = 400;
/// The long side of the image ThumbHash is computed from (its maximum is 100).
const THUMBHASH_SIDE: u32 = 100;
const JPEG_QUALITY: u8 = 80;

/// What the worker stores and records.
#[derive(Debug, Clone)]
pub struct Preview {
    /// As displayed: orientation applied.
    pub width: u32,
    pub height: u32,
    pub thumbnail: Vec<u8>,
    /// `jpg` or `webp`.
    pub thumbnail_extension: &'static str,
    /// Base64 ThumbHash.
    pub thumbhash: String,
}

/// Why an image gets no preview. Each is final: the file stays a plain file.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("{width}x{height} is over MAX_IMAGE_PIXELS ({max})")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    #[error("not a readable image: {0}")]
    Undecodable(String),
    #[error("not an image type with previews: {0}")]
    Unsupported(String),
}

fn undecodable(e: impl std::fmt::Display) -> PreviewError {
    PreviewError::Undecodable(e.to_string())
}

/// Makes the previews of an image of type `mime` whose bytes are `bytes`, refusing one of
/// more than `max_pixels` pixels before decoding it.
pub fn make(bytes: &[u8], mime: &str, max_pixels: u64) -> Result<Preview, PreviewError> {
    let format = match mime {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/webp" => ImageFormat::WebP,
        "image/gif" => ImageFormat::Gif,
        other => return Err(PreviewError::Unsupported(other.to_owned())),
    };
    let (width, height, orientation) = header(bytes, format)?;
    if u64::from(width) * u64::from(height) > max_pixels || width == 0 || height == 0 {
        return Err(PreviewError::TooManyPixels {
            width,
            height,
            max: max_pixels,
        });
    }
    let decoded = match format {
        ImageFormat::Jpeg => decode_jpeg_scaled(bytes, width, height)?,
        _ => decode_limited(bytes, format, width, height, max_pixels)?,
    };
    let mut image = fit(decoded, THUMBNAIL_SIDE);
    image.apply_orientation(orientation);
    let (display_width, display_height) = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    };
    let (thumbnail, thumbnail_extension) = encode(&image)?;
    let small = fit(image, THUMBHASH_SIDE).to_rgba8();
    let hash = thumbhash::rgba_to_thumb_hash(
        small.width() as usize,
        small.height() as usize,
        small.as_raw(),
    );
    Ok(Preview {
        width: display_width,
        height: display_height,
        thumbnail,
        thumbnail_extension,
        thumbhash: base64::engine::general_purpose::STANDARD.encode(hash),
    })
}

/// The stored size and the orientation, from the header alone.
fn header(bytes: &[u8], format: ImageFormat) -> Result<(u32, u32, Orientation), PreviewError> {
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    Ok((width, height, orientation))
}

/// Decoder limits: the pixels of the header, four bytes each, and some room for the
/// decoder's own tables; a file that lies in its header cannot make it allocate more.
fn limits(width: u32, height: u32, max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(max_pixels.saturating_mul(4).saturating_add(16 << 20));
    limits
}

fn decode_limited(
    bytes: &[u8],
    format: ImageFormat,
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Result<DynamicImage, PreviewError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits(width, height, max_pixels));
    // GIF: the first frame only (`decode` reads no further).
    reader.decode().map_err(undecodable)
}

/// A JPEG decoded at the smallest IDCT scale (1/8 to 1) that still covers the thumbnail,
/// by libjpeg-turbo (through `mozjpeg`): a 12 Mpx photo is decoded as ~0.2 Mpx, which is
/// what vipsthumbnail does too. libjpeg reports a corrupt file by unwinding (the crate's
/// error handler), caught here; its allocations are bounded by the header's size, which
/// `make` has checked against the pixel limit.
fn decode_jpeg_scaled(bytes: &[u8], width: u32, height: u32) -> Result<DynamicImage, PreviewError> {
    let (want_w, want_h) = fitted(width, height, THUMBNAIL_SIDE);
    // Output sizes are rounded up: ceil(size * n / 8).
    let covers = |n: u32| (width * n).div_ceil(8) >= want_w && (height * n).div_ceil(8) >= want_h;
    let numerator = (1..=8).find(|&n| covers(n)).unwrap_or(8);
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_jpeg_at(bytes, numerator as u8)
    }));
    match decoded {
        Ok(result) => result,
        Err(unwound) => {
            let reason = unwound
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "libjpeg gave up".to_owned());
            Err(PreviewError::Undecodable(reason))
        }
    }
}

fn decode_jpeg_at(bytes: &[u8], numerator: u8) -> Result<DynamicImage, PreviewError> {
    use mozjpeg::ColorSpace;
    // libjpeg pads a truncated file out with grey (a warning, not an error): a file that
    // does not end with its end-of-image marker gets no preview instead.
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    if !bytes[..end].ends_with(&[0xFF, 0xD9]) {
        return Err(undecodable("a truncated JPEG (no end-of-image marker)"));
    }
    let mut decoder = mozjpeg::Decompress::new_mem(bytes).map_err(undecodable)?;
    decoder.scale(numerator);
    let image = match decoder.color_space() {
        ColorSpace::JCS_GRAYSCALE => {
            let mut started = decoder.grayscale().map_err(undecodable)?;
            let (w, h) = (started.width() as u32, started.height() as u32);
            let pixels: Vec<u8> = started.read_scanlines().map_err(undecodable)?;
            image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        }
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
            let mut started = decoder
                .to_colorspace(ColorSpace::JCS_CMYK)
                .map_err(undecodable)?;
            let (w, h) = (started.width() as u32, started.height() as u32);
            let pixels: Vec<u8> = started.read_scanlines().map_err(undecodable)?;
            // Adobe's CMYK JPEGs are stored inverted; this is the usual approximation.
            let rgb = pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let k = u16::from(p[3]);
                    [0, 1, 2].map(|i| (u16::from(p[i]) * k / 255) as u8)
                })
                .collect();
            RgbImage::from_raw(w, h, rgb).map(DynamicImage::ImageRgb8)
        }
        _ => {
            let mut started = decoder.rgb().map_err(undecodable)?;
            let (w, h) = (started.width() as u32, started.height() as u32);
            let pixels: Vec<u8> = started.read_scanlines().map_err(undecodable)?;
            RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        }
    };
    image.ok_or_else(|| undecodable("the decoded JPEG has the wrong size"))
}

/// `width`x`height` scaled to fit in `side`x`side`, never enlarged.
fn fitted(width: u32, height: u32, side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= side {
        return (width, height);
    }
    let scale = |v: u32| {
        ((u64::from(v) * u64::from(side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    (scale(width), scale(height))
}

/// The image scaled down to fit in `side`x`side` (never enlarged).
fn fit(image: DynamicImage, side: u32) -> DynamicImage {
    let (w, h) = fitted(image.width(), image.height(), side);
    if (w, h) == (image.width(), image.height()) {
        return image;
    }
    image.resize_exact(w, h, image::imageops::FilterType::Triangle)
}

/// JPEG for opaque images; lossless WebP (the only WebP `image` writes) for ones with alpha,
/// which JPEG would flatten.
fn encode(image: &DynamicImage) -> Result<(Vec<u8>, &'static str), PreviewError> {
    let mut out = Cursor::new(Vec::new());
    if image.color().has_alpha() {
        image
            .to_rgba8()
            .write_to(&mut out, ImageFormat::WebP)
            .map_err(undecodable)?;
        Ok((out.into_inner(), "webp"))
    } else {
        let rgb = image.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
            .encode_image(&rgb)
            .map_err(undecodable)?;
        Ok((out.into_inner(), "jpg"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_fit_and_are_never_enlarged() {
        assert_eq!(fitted(3000, 2000, 400), (400, 267));
        assert_eq!(fitted(2000, 3000, 400), (267, 400));
        assert_eq!(fitted(300, 200, 400), (300, 200));
        assert_eq!(fitted(100_000, 1, 400), (400, 1));
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let picture = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(picture)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    #[test]
    fn a_photo_is_decoded_at_the_smallest_scale_that_covers_the_thumbnail() {
        // 3000x2000 -> 400x267 wanted: 1/8 (375x250) is too small, 2/8 (750x500) covers it.
        let scaled = decode_jpeg_scaled(&jpeg(3000, 2000), 3000, 2000).unwrap();
        assert_eq!((scaled.width(), scaled.height()), (750, 500));
        let preview = make(&jpeg(3000, 2000), "image/jpeg", 50_000_000).unwrap();
        assert_eq!((preview.width, preview.height), (3000, 2000));
        let thumbnail = image::load_from_memory(&preview.thumbnail).unwrap();
        assert_eq!((thumbnail.width(), thumbnail.height()), (400, 267));
    }

    #[test]
    fn a_gif_of_ten_thousand_frames_is_read_for_its_first_frame_only() {
        // Within the pixel limit, the frames cost nothing: only the first is decoded. (One
        // whose canvas is over the limit is refused from its header: tests/api/media.rs.)
        let mut gif = b"GIF89a".to_vec();
        gif.extend(64u16.to_le_bytes());
        gif.extend(48u16.to_le_bytes());
        gif.extend([0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // a global colour table of 2
        for _ in 0..10_000 {
            gif.push(0x2C);
            gif.extend([0, 0, 0, 0, 1, 0, 1, 0, 0]); // a frame of one pixel at 0,0
            gif.extend([2, 2, 0x44, 0x01, 0]); // LZW: min code 2, one block
        }
        gif.push(0x3B);
        let preview = make(&gif, "image/gif", 1_000_000).unwrap();
        assert_eq!((preview.width, preview.height), (64, 48));
    }

    #[test]
    fn libjpeg_errors_and_truncation_are_undecodable_not_panics() {
        let whole = jpeg(64, 48);
        let cut = &whole[..whole.len() / 2];
        assert!(matches!(
            decode_jpeg_scaled(cut, 64, 48),
            Err(PreviewError::Undecodable(_))
        ));
        // A frame header claiming 12-bit samples: libjpeg's fatal error, unwound and caught.
        let mut twelve_bit = whole.clone();
        let sof = twelve_bit
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap();
        twelve_bit[sof + 4] = 12;
        match decode_jpeg_scaled(&twelve_bit, 64, 48) {
            Err(PreviewError::Undecodable(reason)) => {
                assert!(reason.contains("libjpeg"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
