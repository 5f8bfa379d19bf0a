//! Raw camera frames (RGB24, NV12, YUYV) as one self-describing byte string.
//!
//! A camera hands over pixels, not a JPEG. The local API takes them with `format`, `width`,
//! `height` and `stride`, checks them here, and wraps them in a 20-byte header so the engine
//! (on the agent, and on the hub when the frame is offloaded) decodes them like any image:
//!
//! ```text
//! 0..4   "TFRM"
//! 4      format: 1 = RGB24, 2 = NV12, 3 = YUYV
//! 5..8   zero
//! 8..12  width, pixels (u32 LE)
//! 12..16 height, pixels (u32 LE)
//! 16..20 stride: bytes from one row of the first plane to the next (u32 LE)
//! 20..   pixel data, rows `stride` bytes apart
//! ```
//!
//! Layouts: RGB24 is `height` rows of `width` R,G,B triplets; NV12 is a Y plane (`height` rows)
//! then an interleaved U,V plane at half resolution (`height / 2` rows, same stride); YUYV is
//! `height` rows of Y0,U,Y1,V quads (two pixels each). NV12 and YUYV need an even width
//! (NV12 also an even height). The last row may stop at its pixels (no padding after it).

/// Magic at the start of a raw frame.
pub const MAGIC: &[u8; 4] = b"TFRM";
/// Bytes before the pixel data.
pub const HEADER_BYTES: usize = 20;

/// Why raw frame parameters or bytes are refused (the caller's mistake: HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not one of `rgb24`, `nv12`, `yuyv`.
    #[error("unknown pixel format `{0}` (rgb24, nv12, yuyv)")]
    UnknownFormat(String),
    /// Width or height is zero.
    #[error("frame is {width}x{height}: both sides must be at least 1")]
    Empty {
        /// Width, pixels.
        width: u32,
        /// Height, pixels.
        height: u32,
    },
    /// Chroma subsampling needs even sides.
    #[error("{format} needs an even {side}, got {value}")]
    Odd {
        /// The format.
        format: FrameFormat,
        /// `width` or `height`.
        side: &'static str,
        /// The odd value.
        value: u32,
    },
    /// A row is longer than the stride.
    #[error("stride {stride} is under the {min} bytes a {width}-pixel {format} row takes")]
    StrideTooSmall {
        /// The format.
        format: FrameFormat,
        /// Width, pixels.
        width: u32,
        /// Given stride, bytes.
        stride: u32,
        /// Smallest stride, bytes.
        min: u64,
    },
    /// The pixel data is not the size width, height and stride give.
    #[error(
        "{format} {width}x{height} with stride {stride} needs {needed} bytes of pixels, got {len}"
    )]
    Length {
        /// The format.
        format: FrameFormat,
        /// Width, pixels.
        width: u32,
        /// Height, pixels.
        height: u32,
        /// Stride, bytes.
        stride: u32,
        /// Bytes needed (last row without padding) .. with padding.
        needed: String,
        /// Bytes given.
        len: usize,
    },
    /// Shorter than the header, or the header is not a raw frame's.
    #[error("not a raw frame: {0}")]
    Header(String),
}

/// Pixel layout of a raw frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameFormat {
    /// 8-bit R, G, B per pixel, packed.
    Rgb24,
    /// 8-bit Y plane, then interleaved U, V at half width and half height (BT.601 limited range).
    Nv12,
    /// Y0 U Y1 V per two pixels, packed (BT.601 limited range).
    Yuyv,
}

impl FrameFormat {
    /// The name used in the API (`rgb24`, `nv12`, `yuyv`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rgb24 => "rgb24",
            Self::Nv12 => "nv12",
            Self::Yuyv => "yuyv",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Rgb24 => 1,
            Self::Nv12 => 2,
            Self::Yuyv => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::Rgb24),
            2 => Some(Self::Nv12),
            3 => Some(Self::Yuyv),
            _ => None,
        }
    }

    /// Bytes a row of the first plane takes without padding.
    pub fn row_bytes(self, width: u32) -> u64 {
        match self {
            Self::Rgb24 => u64::from(width) * 3,
            Self::Nv12 => u64::from(width),
            Self::Yuyv => u64::from(width) * 2,
        }
    }

    /// Rows of `stride` bytes in the data (both planes for NV12).
    pub fn rows(self, height: u32) -> u64 {
        match self {
            Self::Nv12 => u64::from(height) + u64::from(height / 2),
            Self::Rgb24 | Self::Yuyv => u64::from(height),
        }
    }
}

impl std::fmt::Display for FrameFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FrameFormat {
    type Err = FrameError;
    fn from_str(s: &str) -> Result<Self, FrameError> {
        match s.to_ascii_lowercase().as_str() {
            "rgb24" | "rgb" => Ok(Self::Rgb24),
            "nv12" => Ok(Self::Nv12),
            "yuyv" | "yuy2" => Ok(Self::Yuyv),
            _ => Err(FrameError::UnknownFormat(s.to_string())),
        }
    }
}

/// A raw frame's description; the pixels travel beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    /// Pixel layout.
    pub format: FrameFormat,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Bytes from one row of the first plane to the next.
    pub stride: u32,
}

impl FrameSpec {
    /// Checks the dimensions and stride, and that `len` bytes of pixels fit them: at least
    /// the last row without its padding, at most every row padded to the stride.
    pub fn check(&self, len: usize) -> Result<(), FrameError> {
        let (f, w, h) = (self.format, self.width, self.height);
        if w == 0 || h == 0 {
            return Err(FrameError::Empty {
                width: w,
                height: h,
            });
        }
        if matches!(f, FrameFormat::Nv12 | FrameFormat::Yuyv) && w % 2 == 1 {
            return Err(FrameError::Odd {
                format: f,
                side: "width",
                value: w,
            });
        }
        if f == FrameFormat::Nv12 && h % 2 == 1 {
            return Err(FrameError::Odd {
                format: f,
                side: "height",
                value: h,
            });
        }
        let row = f.row_bytes(w);
        if u64::from(self.stride) < row {
            return Err(FrameError::StrideTooSmall {
                format: f,
                width: w,
                stride: self.stride,
                min: row,
            });
        }
        let full = f.rows(h).saturating_mul(u64::from(self.stride));
        let tight = full - (u64::from(self.stride) - row);
        if (len as u64) < tight || (len as u64) > full {
            let needed = if tight == full {
                full.to_string()
            } else {
                format!("{tight}..={full}")
            };
            return Err(FrameError::Length {
                format: f,
                width: w,
                height: h,
                stride: self.stride,
                needed,
                len,
            });
        }
        Ok(())
    }

    /// The header followed by `pixels`, after [`FrameSpec::check`].
    pub fn encode(&self, pixels: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.check(pixels.len())?;
        let mut out = Vec::with_capacity(HEADER_BYTES + pixels.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[self.format.code(), 0, 0, 0]);
        out.extend_from_slice(&self.width.to_le_bytes());
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.stride.to_le_bytes());
        out.extend_from_slice(pixels);
        Ok(out)
    }

    /// The description only, from the header (for size limits before the pixels are checked).
    pub fn peek(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
            return Err(FrameError::Header(format!(
                "{} bytes without the TFRM header",
                bytes.len()
            )));
        }
        let u = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let format = FrameFormat::from_code(bytes[4])
            .ok_or_else(|| FrameError::Header(format!("format code {}", bytes[4])))?;
        Ok(Self {
            format,
            width: u(8),
            height: u(12),
            stride: u(16),
        })
    }

    /// Splits an encoded frame into its checked description and pixels.
    pub fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), FrameError> {
        let spec = Self::peek(bytes)?;
        let pixels = &bytes[HEADER_BYTES..];
        spec.check(pixels.len())?;
        Ok((spec, pixels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: FrameFormat, width: u32, height: u32, stride: u32) -> FrameSpec {
        FrameSpec {
            format,
            width,
            height,
            stride,
        }
    }

    #[test]
    fn round_trip_and_sizes() {
        let s = spec(FrameFormat::Nv12, 4, 2, 6);
        // Y: 2 rows of 6, UV: 1 row; the last row may end at its 4 bytes.
        assert!(s.check(18).is_ok());
        assert!(s.check(16).is_ok());
        let enc = s.encode(&[7; 18]).expect("valid");
        let (back, px) = FrameSpec::decode(&enc).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(px.len(), 18);
    }

    #[test]
    fn precise_errors() {
        let e = spec(FrameFormat::Yuyv, 3, 2, 8).check(16).expect_err("odd");
        assert_eq!(e.to_string(), "yuyv needs an even width, got 3");
        let e = spec(FrameFormat::Rgb24, 10, 2, 20)
            .check(60)
            .expect_err("stride");
        assert_eq!(
            e.to_string(),
            "stride 20 is under the 30 bytes a 10-pixel rgb24 row takes"
        );
        let e = spec(FrameFormat::Rgb24, 2, 2, 8)
            .check(5)
            .expect_err("short");
        assert_eq!(
            e.to_string(),
            "rgb24 2x2 with stride 8 needs 14..=16 bytes of pixels, got 5"
        );
        assert!(matches!(
            spec(FrameFormat::Nv12, 2, 3, 2).check(9),
            Err(FrameError::Odd { side: "height", .. })
        ));
        assert!("bgr".parse::<FrameFormat>().is_err());
        assert!(FrameSpec::decode(b"TFRM").is_err());
    }
}
