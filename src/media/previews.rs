//! An image's previews: its displayed size, a thumbnail and a ThumbHash placeholder.
//! Pure and synchronous (the worker runs it on the blocking pool); every limit is checked
//! from the header before a pixel is decoded.
//!
//! Crates, and why:
//! - `jpeg-decoder` for JPEG: it decodes at 1/2, 1/4 or 1/8 scale in the IDCT (the
//!   libjpeg trick vipsthumbnail relies on), so a 12 Mpx photo is decoded as ~0.2 Mpx.
//!   Built without rayon: the worker pool is the parallelism.
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
        ImageFormat::Jpeg => decode_jpeg_scaled(bytes, width, height, max_pixels)?,
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

/// A JPEG decoded at the smallest IDCT scale (1/8 to 1) that still covers the thumbnail.
fn decode_jpeg_scaled(
    bytes: &[u8],
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Result<DynamicImage, PreviewError> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(
        usize::try_from(max_pixels.saturating_mul(4)).unwrap_or(usize::MAX),
    );
    let (want_w, want_h) = fitted(width, height, THUMBNAIL_SIDE);
    let (w, h) = decoder
        .scale(clamp_u16(want_w), clamp_u16(want_h))
        .map_err(undecodable)?;
    let pixels = decoder.decode().map_err(undecodable)?;
    let info = decoder
        .info()
        .ok_or_else(|| undecodable("a JPEG without a frame"))?;
    let (w, h) = (u32::from(w), u32::from(h));
    use jpeg_decoder::PixelFormat;
    let image = match info.pixel_format {
        PixelFormat::RGB24 => RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
        PixelFormat::L8 => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        PixelFormat::L16 => {
            let wide = pixels
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            image::ImageBuffer::from_raw(w, h, wide).map(DynamicImage::ImageLuma16)
        }
        PixelFormat::CMYK32 => {
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
    };
    image.ok_or_else(|| undecodable("the decoded JPEG has the wrong size"))
}

fn clamp_u16(v: u32) -> u16 {
    v.clamp(1, u32::from(u16::MAX)) as u16
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
}
