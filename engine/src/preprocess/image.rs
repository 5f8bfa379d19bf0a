//! Image pre-processing: strict decoding with size limits, resize, normalise, lay out.
//!
//! JPEG goes through zune-jpeg in strict mode (the `image` crate's default decoder accepts a
//! JPEG cut to 30% of its bytes); PNG through `image` with explicit `Limits`. Dimensions are
//! checked from the header before any pixel is decoded.

use super::PreprocessError;
use crate::settings::ImageConfig;
use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use tandem_shared::manifest::{Color, ImagePreprocess, Layout, Resize};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Decoding limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Max width, pixels.
    pub max_width: u32,
    /// Max height, pixels.
    pub max_height: u32,
    /// Max decoder allocation, bytes.
    pub max_alloc_bytes: u64,
}

impl From<&ImageConfig> for Limits {
    fn from(c: &ImageConfig) -> Self {
        Self {
            max_width: c.max_width,
            max_height: c.max_height,
            max_alloc_bytes: c.max_alloc_bytes,
        }
    }
}

fn check_dims(width: u32, height: u32, limits: &Limits) -> Result<(), PreprocessError> {
    if width > limits.max_width || height > limits.max_height {
        return Err(PreprocessError::TooLarge {
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    Ok(())
}

fn decode_jpeg(
    bytes: &[u8],
    color: Color,
    limits: &Limits,
) -> Result<DynamicImage, PreprocessError> {
    let out = match color {
        Color::Gray => ColorSpace::Luma,
        Color::Rgb => ColorSpace::RGB,
    };
    let opts = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(limits.max_width as usize)
        .set_max_height(limits.max_height as usize)
        .jpeg_set_out_colorspace(out);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    dec.decode_headers()
        .map_err(|e| dims_or_decode(&e.to_string(), limits, bytes))?;
    let info = dec
        .info()
        .ok_or_else(|| PreprocessError::Decode("JPEG header has no frame".into()))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_dims(w, h, limits)?;
    let channels = color.channels() as u64;
    if u64::from(w) * u64::from(h) * channels > limits.max_alloc_bytes {
        return Err(PreprocessError::Decode(format!(
            "{w}x{h} needs more than the {} byte decode budget",
            limits.max_alloc_bytes
        )));
    }
    let pixels = dec
        .decode()
        .map_err(|e| PreprocessError::Decode(format!("JPEG: {e}")))?;
    let img = match color {
        Color::Gray => {
            ImageBuffer::<Luma<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        }
        Color::Rgb => {
            ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        }
    };
    img.ok_or_else(|| PreprocessError::Decode("JPEG decoder returned a short pixel buffer".into()))
}

/// zune reports over-limit dimensions as a decode error; turn that into `TooLarge` when the
/// header says so.
fn dims_or_decode(msg: &str, limits: &Limits, bytes: &[u8]) -> PreprocessError {
    if let Some((w, h)) = jpeg_sof_dims(bytes)
        && check_dims(w, h, limits).is_err()
    {
        return PreprocessError::TooLarge {
            width: w,
            height: h,
            max_width: limits.max_width,
            max_height: limits.max_height,
        };
    }
    PreprocessError::Decode(format!("JPEG: {msg}"))
}

/// Width and height from the first SOF marker, without decoding.
fn jpeg_sof_dims(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    while i + 9 < b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            let h = u32::from(u16::from_be_bytes([b[i + 5], b[i + 6]]));
            let w = u32::from(u16::from_be_bytes([b[i + 7], b[i + 8]]));
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}

fn decode_png(bytes: &[u8], limits: &Limits) -> Result<DynamicImage, PreprocessError> {
    let png =
        || image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let (w, h) = png()
        .into_dimensions()
        .map_err(|e| PreprocessError::Decode(format!("PNG: {e}")))?;
    check_dims(w, h, limits)?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    l.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = png();
    reader.limits(l);
    reader
        .decode()
        .map_err(|e| PreprocessError::Decode(format!("PNG: {e}")))
}

/// Decodes JPEG or PNG bytes into the manifest's colour, refusing anything else.
pub fn decode(
    bytes: &[u8],
    color: Color,
    limits: &Limits,
) -> Result<DynamicImage, PreprocessError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        decode_jpeg(bytes, color, limits)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, limits)
    } else if bytes.is_empty() {
        Err(PreprocessError::UnsupportedFormat(
            "the body is empty".into(),
        ))
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Err(PreprocessError::UnsupportedFormat(format!(
            "first bytes {}",
            head.join(" ")
        )))
    }
}

/// Resizes per the manifest (bilinear, antialiased like PIL's BILINEAR).
pub fn resize(img: &DynamicImage, p: &ImagePreprocess) -> DynamicImage {
    match p.resize {
        Resize::Stretch => img.resize_exact(p.width, p.height, FilterType::Triangle),
        Resize::ShorterSideCenterCrop => {
            let side = p.shorter_side.unwrap_or(p.width.max(p.height));
            let (w, h) = (img.width().max(1), img.height().max(1));
            let (nw, nh) = if w <= h {
                (
                    side,
                    ((u64::from(h) * u64::from(side)) / u64::from(w)) as u32,
                )
            } else {
                (
                    ((u64::from(w) * u64::from(side)) / u64::from(h)) as u32,
                    side,
                )
            };
            let r = img.resize_exact(nw.max(p.width), nh.max(p.height), FilterType::Triangle);
            let x = (r.width() - p.width) / 2;
            let y = (r.height() - p.height) / 2;
            r.crop_imm(x, y, p.width, p.height)
        }
    }
}

/// Writes one normalised image into `out` (length C*H*W) in the manifest's layout.
pub fn normalise_into(img: &DynamicImage, p: &ImagePreprocess, out: &mut [f32]) {
    let c = p.color.channels();
    let (w, h) = (p.width as usize, p.height as usize);
    let mean = |ch: usize| p.mean.get(ch).or(p.mean.first()).copied().unwrap_or(0.0);
    let std = |ch: usize| p.std.get(ch).or(p.std.first()).copied().unwrap_or(1.0);
    let raw: Vec<u8> = match p.color {
        Color::Gray => img.to_luma8().into_raw(),
        Color::Rgb => img.to_rgb8().into_raw(),
    };
    let (m, s): (Vec<f32>, Vec<f32>) = (0..c).map(|ch| (mean(ch), std(ch))).unzip();
    for (i, px) in raw.chunks_exact(c).enumerate() {
        let (y, x) = (i / w, i % w);
        for ch in 0..c {
            let v = (f32::from(px[ch]) * p.scale - m[ch]) / s[ch];
            let idx = match p.layout {
                Layout::NCHW => ch * h * w + y * w + x,
                Layout::NHWC => (y * w + x) * c + ch,
            };
            out[idx] = v;
        }
    }
}

/// Decodes, resizes and normalises a batch of encoded images into one tensor.
pub fn prepare_batch(
    images: &[&[u8]],
    p: &ImagePreprocess,
    limits: &Limits,
) -> Result<(Vec<i64>, Vec<f32>), PreprocessError> {
    let c = p.color.channels();
    let per = c * p.width as usize * p.height as usize;
    let mut data = vec![0.0f32; per * images.len()];
    for (bytes, out) in images.iter().zip(data.chunks_exact_mut(per)) {
        let img = decode(bytes, p.color, limits)?;
        normalise_into(&resize(&img, p), p, out);
    }
    let (h, w, c) = (i64::from(p.height), i64::from(p.width), c as i64);
    let n = images.len() as i64;
    let shape = match p.layout {
        Layout::NCHW => vec![n, c, h, w],
        Layout::NHWC => vec![n, h, w, c],
    };
    Ok((shape, data))
}
