//! The pre-processing path before the SIMD one: full decode, `image`'s resize and a
//! per-pixel normalise. Kept as the reference the fast path is tested against (within a
//! stated tolerance) and as the "CPU before" row of `make bench-frames`.

use super::PreprocessError;
use super::image::{Limits, Pixels, decode};
use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use tandem_shared::manifest::{Color, ImagePreprocess, Layout, Resize};

/// Decodes at full size into an `image` buffer.
pub fn decode_image(
    bytes: &[u8],
    color: Color,
    limits: &Limits,
) -> Result<DynamicImage, PreprocessError> {
    let Pixels {
        width,
        height,
        data,
        ..
    } = decode(bytes, color, limits)?;
    let img =
        match color {
            Color::Gray => ImageBuffer::<Luma<u8>, _>::from_raw(width, height, data)
                .map(DynamicImage::ImageLuma8),
            Color::Rgb | Color::Bgr => ImageBuffer::<Rgb<u8>, _>::from_raw(width, height, data)
                .map(DynamicImage::ImageRgb8),
        };
    img.ok_or_else(|| PreprocessError::Decode("short pixel buffer".into()))
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
        Resize::Letterbox => {
            let g = super::geometry::Plan::new(img.width(), img.height(), p);
            let r = img.resize_exact(g.out_w, g.out_h, FilterType::Triangle);
            let mut canvas = match p.color {
                Color::Gray => DynamicImage::ImageLuma8(ImageBuffer::from_pixel(
                    p.width,
                    p.height,
                    Luma([p.pad_value]),
                )),
                Color::Rgb | Color::Bgr => DynamicImage::ImageRgb8(ImageBuffer::from_pixel(
                    p.width,
                    p.height,
                    Rgb([p.pad_value; 3]),
                )),
            };
            image::imageops::overlay(&mut canvas, &r, i64::from(g.off_x), i64::from(g.off_y));
            canvas
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
        Color::Rgb | Color::Bgr => img.to_rgb8().into_raw(),
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

/// One image through the reference path into `out` (C*H*W).
pub fn prepare_into(
    bytes: &[u8],
    p: &ImagePreprocess,
    limits: &Limits,
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    let img = decode_image(bytes, p.color, limits)?;
    normalise_into(&resize(&img, p), p, out);
    Ok(())
}
