//! RGB JPEG decoding through jpeg-decoder, at a reduced DCT scale (1/2, 1/4, 1/8) when the
//! model's input is much smaller than the photo: a 4K frame for a 224-pixel model decodes at
//! 1/4 (960x540) in a fraction of the full decode's time. At full scale it is used too: its
//! colour conversion and chroma upsampling are closer to libjpeg-turbo's (PIL) than
//! zune-jpeg's (mean 0.13-0.21 vs 0.18-0.35 levels on the ImageNet samples), which keeps
//! near-tie INT8 answers the same as Python's. It refuses truncated data (it reads to the
//! end-of-image marker) and gets the same size and allocation limits.

use super::PreprocessError;
use super::image::{Limits, Pixels, check_dims, jpeg_sof_dims};
use jpeg_decoder::{Decoder, PixelFormat};

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
    let s = idct_size(w, h, min);
    let err = |e: jpeg_decoder::Error| PreprocessError::Decode(format!("JPEG: {e}"));
    let mut dec = Decoder::new(bytes);
    dec.set_max_decoding_buffer_size(usize::try_from(limits.max_alloc_bytes).unwrap_or(usize::MAX));
    let req = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    let (ow, oh) = dec
        .scale(req(scaled(w, s)), req(scaled(h, s)))
        .map_err(err)?;
    let info = dec
        .info()
        .ok_or_else(|| PreprocessError::Decode("JPEG header has no frame".into()))?;
    if !matches!(info.pixel_format, PixelFormat::RGB24 | PixelFormat::L8) {
        return Ok(None);
    }
    let raw = dec.decode().map_err(err)?;
    let (ow, oh) = (u32::from(ow), u32::from(oh));
    let rgb = match info.pixel_format {
        PixelFormat::L8 => raw.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => raw,
    };
    Pixels::new(ow, oh, 3, rgb)
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
}
