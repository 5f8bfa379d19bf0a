//! Declared shifted variants of a labelled set, for the robustness part of a report: images
//! made brighter, flatter, blurred, noisier or JPEG-compressed, each by a stated amount and
//! deterministically (the noise from a seed per item), so two runs judge the same pixels.
//!
//! Text has no shift here: the shipped sentence set carries no domain field to split by
//! (`ShiftError::NotForText`); a set with domains is issue 13's loop benchmark.

use super::dataset::Payload;
use bytes::Bytes;
use image::{GrayImage, RgbImage};

/// The shifts a report runs when none are named.
pub const DEFAULT_SHIFTS: [&str; 5] = [
    "brightness:0.3",
    "contrast:0.5",
    "blur:1.0",
    "noise:0.1",
    "jpeg:20",
];

/// Largest image side decoded for a shift.
const MAX_SIDE: u32 = 8192;

/// Why a shift cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    /// A declaration that does not parse.
    #[error(
        "shift `{0}`: expected brightness:D (-1..1), contrast:F (0..4), blur:SIGMA (0..10), noise:STD (0..1) or jpeg:QUALITY (1..100)"
    )]
    Parse(String),
    /// A text input.
    #[error("shift `{0}` is for images; a text set has no declared shift")]
    NotForText(String),
    /// An image that does not decode or encode.
    #[error("image: {0}")]
    Image(String),
}

/// One declared shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// Adds this fraction of full scale to every channel.
    Brightness(f32),
    /// Scales the distance from mid-grey by this factor.
    Contrast(f32),
    /// Gaussian blur of this sigma, in pixels.
    Blur(f32),
    /// Adds Gaussian noise of this standard deviation (fraction of full scale).
    Noise(f32),
    /// Re-encodes as JPEG at this quality.
    Jpeg(u8),
}

impl std::str::FromStr for Shift {
    type Err = ShiftError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ShiftError::Parse(s.to_string());
        let (name, value) = s.split_once(':').ok_or_else(bad)?;
        let v: f32 = value.trim().parse().map_err(|_| bad())?;
        let within = |lo: f32, hi: f32| (lo..=hi).contains(&v).then_some(v).ok_or_else(bad);
        Ok(match name.trim() {
            "brightness" => Self::Brightness(within(-1.0, 1.0)?),
            "contrast" => Self::Contrast(within(0.0, 4.0)?),
            "blur" => Self::Blur(within(0.0, 10.0)?),
            "noise" => Self::Noise(within(0.0, 1.0)?),
            "jpeg" if v.fract() == 0.0 => Self::Jpeg(within(1.0, 100.0)? as u8),
            _ => return Err(bad()),
        })
    }
}

impl std::fmt::Display for Shift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Brightness(v) => write!(f, "brightness:{v}"),
            Self::Contrast(v) => write!(f, "contrast:{v}"),
            Self::Blur(v) => write!(f, "blur:{v}"),
            Self::Noise(v) => write!(f, "noise:{v}"),
            Self::Jpeg(q) => write!(f, "jpeg:{q}"),
        }
    }
}

/// Decoded pixels, grey or colour (the engine's pre-processing converts as its manifest says).
#[derive(Debug, Clone)]
pub enum Pixels {
    /// 8-bit grey.
    Gray(GrayImage),
    /// 8-bit RGB.
    Rgb(RgbImage),
}

impl Pixels {
    fn decode(bytes: &[u8]) -> Result<Self, ShiftError> {
        let err = |e: image::ImageError| ShiftError::Image(e.to_string());
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ShiftError::Image(e.to_string()))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        reader.limits(limits);
        let img = reader.decode().map_err(err)?;
        Ok(if img.color().has_color() {
            Self::Rgb(img.into_rgb8())
        } else {
            Self::Gray(img.into_luma8())
        })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Gray(g) => g,
            Self::Rgb(c) => c,
        }
    }
}

/// PNG bytes of `px`, or JPEG at `quality`.
pub fn encode(px: &Pixels, quality: Option<u8>) -> Result<Vec<u8>, ShiftError> {
    let mut out = std::io::Cursor::new(Vec::new());
    let err = |e: image::ImageError| ShiftError::Image(e.to_string());
    match quality {
        Some(q) => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q);
            match px {
                Pixels::Gray(g) => g.write_with_encoder(enc),
                Pixels::Rgb(c) => c.write_with_encoder(enc),
            }
            .map_err(err)?;
        }
        None => match px {
            Pixels::Gray(g) => g.write_to(&mut out, image::ImageFormat::Png),
            Pixels::Rgb(c) => c.write_to(&mut out, image::ImageFormat::Png),
        }
        .map_err(err)?,
    }
    Ok(out.into_inner())
}

/// splitmix64: a small deterministic generator for the noise.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn gaussian(state: &mut u64) -> f32 {
    let u = |s: &mut u64| ((splitmix(s) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (u1, u2) = (u(state), u(state));
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

impl Shift {
    /// `input` shifted; `seed` makes the noise of one item the same on every run.
    pub fn apply(&self, input: &Payload, seed: u64) -> Result<Payload, ShiftError> {
        let Payload::Image(bytes) = input else {
            return Err(ShiftError::NotForText(self.to_string()));
        };
        let mut px = Pixels::decode(bytes)?;
        let map = |px: &mut Pixels, f: &mut dyn FnMut(f32) -> f32| {
            for b in px.bytes_mut() {
                *b = f(f32::from(*b)).round().clamp(0.0, 255.0) as u8;
            }
        };
        let mut quality = None;
        match *self {
            Self::Brightness(d) => map(&mut px, &mut |v| v + d * 255.0),
            Self::Contrast(c) => map(&mut px, &mut |v| 127.5 + (v - 127.5) * c),
            Self::Noise(s) => {
                let mut state = seed ^ 0x5EED_0F7A_4DE3_u64;
                map(&mut px, &mut |v| v + gaussian(&mut state) * s * 255.0);
            }
            Self::Blur(sigma) if sigma > 0.0 => {
                px = match px {
                    Pixels::Gray(g) => Pixels::Gray(image::imageops::blur(&g, sigma)),
                    Pixels::Rgb(c) => Pixels::Rgb(image::imageops::blur(&c, sigma)),
                }
            }
            Self::Blur(_) => {}
            Self::Jpeg(q) => quality = Some(q),
        }
        Ok(Payload::Image(Bytes::from(encode(&px, quality)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(v: u8) -> Payload {
        let g = GrayImage::from_pixel(8, 8, image::Luma([v]));
        Payload::Image(Bytes::from(encode(&Pixels::Gray(g), None).expect("png")))
    }

    fn pixels(p: &Payload) -> Vec<u8> {
        let Payload::Image(b) = p else {
            panic!("image")
        };
        match Pixels::decode(b).expect("decodes") {
            Pixels::Gray(g) => g.into_raw(),
            Pixels::Rgb(c) => c.into_raw(),
        }
    }

    #[test]
    fn declarations_parse_with_ranges() {
        for s in DEFAULT_SHIFTS {
            let shift: Shift = s.parse().expect(s);
            assert_eq!(shift.to_string().parse::<Shift>().expect("again"), shift);
        }
        for bad in [
            "brightness",
            "blur:-1",
            "jpeg:0",
            "jpeg:50.5",
            "fog:1",
            "noise:x",
        ] {
            assert!(bad.parse::<Shift>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shifts_change_pixels_as_declared_and_deterministically() {
        let base = grey(100);
        let bright = Shift::Brightness(0.2).apply(&base, 0).expect("shift");
        assert!(pixels(&bright).iter().all(|v| *v == 151), "100 + 51");
        let flat = Shift::Contrast(0.0).apply(&base, 0).expect("shift");
        assert!(pixels(&flat).iter().all(|v| *v == 128));
        let a = Shift::Noise(0.1).apply(&base, 7).expect("shift");
        let b = Shift::Noise(0.1).apply(&base, 7).expect("shift");
        let c = Shift::Noise(0.1).apply(&base, 8).expect("shift");
        assert_eq!(a, b, "same seed, same noise");
        assert_ne!(a, c);
        let Payload::Image(j) = Shift::Jpeg(30).apply(&base, 0).expect("shift") else {
            panic!("image")
        };
        assert_eq!(&j[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
        let err = Shift::Blur(1.0).apply(&Payload::Text("x".into()), 0);
        assert!(matches!(err, Err(ShiftError::NotForText(_))));
    }
}
