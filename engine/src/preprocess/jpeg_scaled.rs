//! RGB JPEG decoding through libjpeg-turbo (the `turbojpeg` crate, built from its bundled
//! source), at a reduced DCT scale (1/2, 1/4, 1/8) when the model's input is much smaller than
//! the photo: a 4K frame for a 224-pixel model decodes at 1/4 (960x540) in a fraction of the
//! full decode's time. At full scale it is the decoder PIL uses (same islow IDCT, same fancy
//! chroma upsampling), so the pixels are those Python's reference sees, and its SIMD Huffman,
//! IDCT and colour conversion decode a 512x512 progressive ImageNet JPEG about 3x faster than
//! jpeg-decoder did. Warnings (truncated or corrupt data) are errors, progressive scans are
//! capped ([`MAX_SCANS`]), and the same size and allocation limits apply.

use super::PreprocessError;
use super::image::{Limits, Pixels, check_dims, jpeg_sof_dims};
use std::cell::RefCell;
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

/// Most progressive scans a JPEG may have (libjpeg-turbo's recommended guard against the
/// "many tiny scans" denial of service; real encoders write about 10).
pub const MAX_SCANS: u32 = 500;

thread_local! {
    /// One decompressor per thread: `tj3Init` allocates its state, reused between images.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Output side of a `len`-pixel side decoded with an IDCT of `s` (of 8) coefficients.
fn scaled(len: u32, s: u32) -> u32 {
    (len * s).div_ceil(8)
}

/// The smallest IDCT size (1, 2, 4 or 8 of 8) that keeps both sides at least `min`.
pub fn idct_size(w: u32, h: u32, min: (u32, u32)) -> u32 {
    [1, 2, 4]
        .into_iter()
        .find(|&s| scaled(w, s) >= min.0 && scaled(h, s) >= min.1)
        .unwrap_or(8)
}

fn err(e: turbojpeg::Error) -> PreprocessError {
    PreprocessError::Decode(format!("JPEG: {e}"))
}

/// RGB pixels, at a reduced scale where `min` allows, or `None` when the JPEG is not
/// YCbCr/gray (e.g. CMYK): then the caller decodes it with zune-jpeg.
pub fn decode(
    bytes: &[u8],
    limits: &Limits,
    min: (u32, u32),
) -> Result<Option<Pixels>, PreprocessError> {
    let Some((w, h)) = jpeg_sof_dims(bytes) else {
        return Ok(None);
    };
    check_dims(w, h, limits)?;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dec = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(Decompressor::new().map_err(err)?),
        };
        decode_with(dec, bytes, limits, min)
    })
}

fn decode_with(
    dec: &mut Decompressor,
    bytes: &[u8],
    limits: &Limits,
    min: (u32, u32),
) -> Result<Option<Pixels>, PreprocessError> {
    let header = dec.read_header(bytes).map_err(err)?;
    if !matches!(
        header.colorspace,
        Colorspace::YCbCr | Colorspace::Gray | Colorspace::RGB
    ) || header.is_lossless
    {
        return Ok(None);
    }
    let (w, h) = (
        u32::try_from(header.width).unwrap_or(u32::MAX),
        u32::try_from(header.height).unwrap_or(u32::MAX),
    );
    check_dims(w, h, limits)?;
    let scale = ScalingFactor::new(idct_size(w, h, min) as usize, 8);
    let header = header.scaled(scale);
    let (ow, oh) = (header.width, header.height);
    let bytes_needed = ow as u64 * oh as u64 * 3;
    if bytes_needed > limits.max_alloc_bytes {
        return Err(PreprocessError::Decode(format!(
            "{w}x{h} needs more than the {} byte decode budget",
            limits.max_alloc_bytes
        )));
    }
    dec.set_scaling_factor(scale).map_err(err)?;
    dec.set_scan_limit(MAX_SCANS).map_err(err)?;
    // Every byte is written by the decoder; a reused buffer spares the page faults.
    let mut pixels = super::scratch::bytes(ow * oh * 3);
    let image = Image {
        pixels: pixels.as_mut_slice(),
        width: ow,
        pitch: ow * 3,
        height: oh,
        format: PixelFormat::RGB,
    };
    dec.decompress(bytes, image).map_err(err)?;
    let (ow, oh) = (
        u32::try_from(ow).unwrap_or(u32::MAX),
        u32::try_from(oh).unwrap_or(u32::MAX),
    );
    Pixels::new(ow, oh, 3, pixels)
        .map(Some)
        .ok_or_else(|| PreprocessError::Decode("JPEG decoder returned a short pixel buffer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_smallest_scale_that_still_shrinks() {
        assert_eq!(idct_size(3840, 2160, (224, 224)), 1);
        assert_eq!(idct_size(1920, 1080, (224, 224)), 2);
        assert_eq!(idct_size(1920, 1080, (416, 416)), 4);
        assert_eq!(idct_size(500, 375, (224, 224)), 8);
        assert_eq!(idct_size(500, 375, (240, 180)), 4);
    }

    fn sample() -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::read(dir.join("../models/vision-imagenet/samples/imagenet_00_243.jpg"))
            .expect("sample")
    }

    fn limits() -> Limits {
        Limits {
            max_width: 8192,
            max_height: 8192,
            max_alloc_bytes: 64 << 20,
        }
    }

    #[test]
    fn a_truncated_jpeg_is_refused() {
        let jpg = sample();
        let cut = &jpg[..jpg.len() * 3 / 4];
        assert!(matches!(
            decode(cut, &limits(), (u32::MAX, u32::MAX)),
            Err(PreprocessError::Decode(_))
        ));
    }

    #[test]
    fn decodes_at_half_scale_when_the_target_allows() {
        let px = decode(&sample(), &limits(), (200, 200))
            .expect("decodes")
            .expect("YCbCr");
        assert_eq!((px.width, px.height), (256, 256));
    }
}
