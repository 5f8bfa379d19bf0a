//! Image pre-processing: strict decoding with size limits, then resize, normalise and lay out.
//!
//! RGB JPEG goes through libjpeg-turbo (at a reduced DCT scale, 1/2 to 1/8, when the model's
//! input is that much smaller, as PIL's `draft` does); gray and CMYK JPEG through zune-jpeg in
//! strict mode (the `image` crate's default decoder accepts a JPEG cut to 30%); PNG through
//! `image` with explicit `Limits`; raw camera frames (`tandem_shared::frame`) through
//! [`super::frame`]. Dimensions are checked from the header before any pixel is decoded.
//! The pixels then go through [`super::resize`] and [`super::tensor`] (or the GPU path).

use super::PreprocessError;
use super::geometry::Plan;
use crate::settings::ImageConfig;
use tandem_shared::frame::FrameSpec;
use tandem_shared::manifest::{Color, ImagePreprocess, Layout};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Decoded 8-bit pixels, packed rows (`width * channels` bytes each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// `width * height * channels` bytes.
    pub data: Vec<u8>,
}

impl Pixels {
    /// `data` as a `width` x `height` image, if it has exactly the bytes that takes.
    pub fn new(width: u32, height: u32, channels: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width as usize * height as usize * channels).then_some(Self {
            width,
            height,
            channels,
            data,
        })
    }
}

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

pub(super) fn check_dims(width: u32, height: u32, limits: &Limits) -> Result<(), PreprocessError> {
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

fn decode_jpeg(bytes: &[u8], color: Color, limits: &Limits) -> Result<Pixels, PreprocessError> {
    let out = match color {
        Color::Gray => ColorSpace::Luma,
        Color::Rgb | Color::Bgr => ColorSpace::RGB,
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
    Pixels::new(w, h, color.channels(), pixels)
        .ok_or_else(|| PreprocessError::Decode("JPEG decoder returned a short pixel buffer".into()))
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
pub(super) fn jpeg_sof_dims(b: &[u8]) -> Option<(u32, u32)> {
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

fn decode_png(bytes: &[u8], color: Color, limits: &Limits) -> Result<Pixels, PreprocessError> {
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
    let img = reader
        .decode()
        .map_err(|e| PreprocessError::Decode(format!("PNG: {e}")))?;
    let (w, h) = (img.width(), img.height());
    let raw = match color {
        Color::Gray => img.into_luma8().into_raw(),
        Color::Rgb | Color::Bgr => img.into_rgb8().into_raw(),
    };
    Pixels::new(w, h, color.channels(), raw)
        .ok_or_else(|| PreprocessError::Decode("PNG decoder returned a short pixel buffer".into()))
}

/// Width and height from the header of a JPEG, PNG or raw frame, without decoding.
pub fn peek_dims(bytes: &[u8]) -> Result<(u32, u32), PreprocessError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg_sof_dims(bytes).ok_or_else(|| PreprocessError::Decode("JPEG: no frame header".into()))
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() >= 24 {
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Ok((be(16), be(20)))
    } else if bytes.starts_with(tandem_shared::frame::MAGIC) {
        let s = FrameSpec::peek(bytes)?;
        Ok((s.width, s.height))
    } else {
        Err(unsupported(bytes))
    }
}

fn unsupported(bytes: &[u8]) -> PreprocessError {
    if bytes.is_empty() {
        return PreprocessError::UnsupportedFormat("the body is empty".into());
    }
    let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    PreprocessError::UnsupportedFormat(format!("first bytes {}", head.join(" ")))
}

/// Decodes JPEG, PNG or raw-frame bytes into the manifest's colour at full size.
pub fn decode(bytes: &[u8], color: Color, limits: &Limits) -> Result<Pixels, PreprocessError> {
    decode_at_least(bytes, color, limits, (u32::MAX, u32::MAX))
}

/// Decodes like [`decode`], but a JPEG may come out smaller (a reduced DCT scale) as long as
/// it stays at least `min` (width, height).
pub fn decode_at_least(
    bytes: &[u8],
    color: Color,
    limits: &Limits,
    min: (u32, u32),
) -> Result<Pixels, PreprocessError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if color == Color::Rgb
            && let Some(p) = super::jpeg_scaled::decode(bytes, limits, min)?
        {
            return Ok(p);
        }
        decode_jpeg(bytes, color, limits)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, color, limits)
    } else if bytes.starts_with(tandem_shared::frame::MAGIC) {
        let spec = FrameSpec::peek(bytes)?;
        check_dims(spec.width, spec.height, limits)?;
        let (spec, data) = FrameSpec::decode(bytes)?;
        Ok(super::frame::to_pixels(&spec, data, color))
    } else {
        Err(unsupported(bytes))
    }
}

/// Where pre-processing runs after decoding.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// SIMD resize and the fused normalise/layout pass on this thread.
    #[default]
    Cpu,
    /// The wgpu compute path.
    #[cfg(feature = "gpu")]
    Gpu(std::sync::Arc<super::gpu::Gpu>),
}

/// Decoded pixels at the plan's output size into the tensor slice, on the CPU.
pub fn finish_cpu(
    px: &Pixels,
    plan: &Plan,
    p: &ImagePreprocess,
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    if plan.identity() {
        super::tensor::write(&px.data, plan, p, out);
    } else {
        let r = super::resize::resize(px, plan)?;
        super::tensor::write(&r.data, plan, p, out);
        super::scratch::give_bytes(r.data);
    }
    Ok(())
}

/// One encoded image into `out` (C*H*W floats); returns its placement in source pixels.
pub fn prepare_into(
    bytes: &[u8],
    p: &ImagePreprocess,
    limits: &Limits,
    backend: &Backend,
    out: &mut [f32],
) -> Result<Plan, PreprocessError> {
    let (w, h) = peek_dims(bytes)?;
    check_dims(w, h, limits)?;
    let plan = Plan::new(w, h, p);
    // Twice the smallest size: the resize after a reduced DCT scale still shrinks by 2 or
    // more, which keeps the result within the tolerance of the full decode (a 512-pixel photo
    // for a 224 input is decoded in full; 1080p and 4K at 1/2 to 1/8). Measured on the 20
    // ImageNet samples, 1/2 would move their 224x224 tensors up to 86 levels of 255 from PIL's
    // (mean up to 3.6) and save nothing measurable on their progressive coding, where Huffman
    // decoding is ~78% of the decode (docs/benchmarks/frames.md).
    let (mw, mh) = plan.min_source();
    let px = decode_at_least(bytes, p.color, limits, (mw * 2, mh * 2))?;
    let local = if (px.width, px.height) == (w, h) {
        plan
    } else {
        plan.rescaled(px.width, px.height)
    };
    match backend {
        Backend::Cpu => finish_cpu(&px, &local, p, out)?,
        #[cfg(feature = "gpu")]
        Backend::Gpu(g) => {
            if let Err(e) = g.prepare(&px, &local, p, out) {
                tracing::warn!(error = %e, "GPU pre-processing failed; this image on the CPU");
                finish_cpu(&px, &local, p, out)?;
            }
        }
    }
    super::scratch::give_bytes(px.data);
    Ok(plan)
}

/// The tensor shape of `n` images.
pub fn batch_shape(p: &ImagePreprocess, n: usize) -> Vec<i64> {
    let (h, w, c) = (
        i64::from(p.height),
        i64::from(p.width),
        p.color.channels() as i64,
    );
    let n = n as i64;
    match p.layout {
        Layout::NCHW => vec![n, c, h, w],
        Layout::NHWC => vec![n, h, w, c],
    }
}

/// A batch tensor's shape and data, and each image's placement.
pub type Prepared = (Vec<i64>, Vec<f32>, Vec<Plan>);

/// Decodes, resizes and normalises a batch of encoded images into one tensor; also returns
/// each image's placement (detection maps boxes back through it).
pub fn prepare_batch_with(
    images: &[&[u8]],
    p: &ImagePreprocess,
    limits: &Limits,
    backend: &Backend,
) -> Result<Prepared, PreprocessError> {
    let per = p.color.channels() * p.width as usize * p.height as usize;
    // Every value is written below (or the batch fails); the engine hands the buffer back
    // after the run.
    let mut data = super::scratch::floats(per * images.len());
    let mut plans = Vec::with_capacity(images.len());
    for (bytes, out) in images.iter().zip(data.chunks_exact_mut(per)) {
        plans.push(prepare_into(bytes, p, limits, backend, out)?);
    }
    Ok((batch_shape(p, images.len()), data, plans))
}

/// [`prepare_batch_with`] on the CPU, without the placements.
pub fn prepare_batch(
    images: &[&[u8]],
    p: &ImagePreprocess,
    limits: &Limits,
) -> Result<(Vec<i64>, Vec<f32>), PreprocessError> {
    let (shape, data, _) = prepare_batch_with(images, p, limits, &Backend::Cpu)?;
    Ok((shape, data))
}
