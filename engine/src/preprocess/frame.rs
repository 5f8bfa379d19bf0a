//! Raw camera frames (RGB24, NV12, YUYV; see `tandem_shared::frame`) to packed RGB or gray.
//!
//! YUV is BT.601 limited range ("video range", what V4L2 webcams and most ISPs emit), chroma
//! taken from the nearest sample (each U,V pair covers 2x2 pixels in NV12, 2x1 in YUYV), in
//! 8.8 fixed point: within 1 level of the float formula (tested over a grid of Y, U, V).
//! Gray models take the Y plane as it is; RGB24 to gray uses the `image` crate's weights.

use super::image::Pixels;
use tandem_shared::frame::{FrameFormat, FrameSpec};
use tandem_shared::manifest::Color;

#[inline]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// One BT.601 limited-range pixel to R, G, B.
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16) + 128;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    [
        clamp8((c + 409 * e) >> 8),
        clamp8((c - 100 * d - 208 * e) >> 8),
        clamp8((c + 516 * d) >> 8),
    ]
}

/// Rec. 709 luma with the weights `image::Rgb::to_luma` uses.
#[inline]
fn luma(p: &[u8]) -> u8 {
    let l = 2126 * u32::from(p[0]) + 7152 * u32::from(p[1]) + 722 * u32::from(p[2]);
    ((l + 5000) / 10000) as u8
}

/// Converts a checked frame to packed pixels in the model's colour.
pub fn to_pixels(spec: &FrameSpec, data: &[u8], color: Color) -> Pixels {
    let (w, h, stride) = (
        spec.width as usize,
        spec.height as usize,
        spec.stride as usize,
    );
    let c = color.channels();
    let mut out = vec![0u8; w * h * c];
    let row = |y: usize, len: usize| &data[y * stride..y * stride + len];
    match (spec.format, color) {
        (FrameFormat::Rgb24, Color::Rgb | Color::Bgr) => {
            for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
                dst.copy_from_slice(row(y, w * 3));
            }
        }
        (FrameFormat::Rgb24, Color::Gray) => {
            for (y, dst) in out.chunks_exact_mut(w).enumerate() {
                for (d, px) in dst.iter_mut().zip(row(y, w * 3).chunks_exact(3)) {
                    *d = luma(px);
                }
            }
        }
        (FrameFormat::Nv12, Color::Gray) => {
            for (y, dst) in out.chunks_exact_mut(w).enumerate() {
                dst.copy_from_slice(row(y, w));
            }
        }
        (FrameFormat::Nv12, Color::Rgb | Color::Bgr) => {
            for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
                let (ys, uv) = (row(y, w), row(h + y / 2, w));
                for ((px, yy), c) in dst
                    .chunks_exact_mut(6)
                    .zip(ys.chunks_exact(2))
                    .zip(uv.chunks_exact(2))
                {
                    px[..3].copy_from_slice(&yuv_to_rgb(yy[0], c[0], c[1]));
                    px[3..].copy_from_slice(&yuv_to_rgb(yy[1], c[0], c[1]));
                }
            }
        }
        (FrameFormat::Yuyv, Color::Gray) => {
            for (y, dst) in out.chunks_exact_mut(w).enumerate() {
                for (d, q) in dst.iter_mut().zip(row(y, w * 2).chunks_exact(2)) {
                    *d = q[0];
                }
            }
        }
        (FrameFormat::Yuyv, Color::Rgb | Color::Bgr) => {
            for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
                for (px, q) in dst.chunks_exact_mut(6).zip(row(y, w * 2).chunks_exact(4)) {
                    px[..3].copy_from_slice(&yuv_to_rgb(q[0], q[1], q[3]));
                    px[3..].copy_from_slice(&yuv_to_rgb(q[2], q[1], q[3]));
                }
            }
        }
    }
    Pixels {
        width: spec.width,
        height: spec.height,
        channels: c,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Video black and white, and the 75% colour bars' red (BT.601).
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        let red = yuv_to_rgb(65, 100, 212);
        assert!(red[0] >= 190 && red[1] <= 2 && red[2] <= 2, "{red:?}");
    }

    #[test]
    fn within_one_level_of_the_float_formula() {
        // R = 1.164383 (Y-16) + 1.596027 (V-128), G = 1.164383 (Y-16) - 0.391762 (U-128)
        // - 0.812968 (V-128), B = 1.164383 (Y-16) + 2.017232 (U-128) (BT.601 limited range,
        // as numpy/OpenCV's COLOR_YUV2RGB_NV12 compute it), over a grid of Y, U, V.
        let q = |v: f64| v.round().clamp(0.0, 255.0) as i32;
        for y in (0..=255).step_by(3) {
            for u in (0..=255).step_by(5) {
                for v in (0..=255).step_by(5) {
                    let (c, d, e) = (
                        f64::from(y) - 16.0,
                        f64::from(u) - 128.0,
                        f64::from(v) - 128.0,
                    );
                    let want = [
                        q(1.164383 * c + 1.596027 * e),
                        q(1.164383 * c - 0.391762 * d - 0.812968 * e),
                        q(1.164383 * c + 2.017232 * d),
                    ];
                    let got = yuv_to_rgb(y as u8, u as u8, v as u8);
                    for ch in 0..3 {
                        assert!(
                            (i32::from(got[ch]) - want[ch]).abs() <= 1,
                            "Y{y} U{u} V{v}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn nv12_and_yuyv_share_chroma_per_block() {
        // 2x2 NV12: four Y values, one U,V pair; YUYV 2x1 the same per row.
        let nv12 = FrameSpec {
            format: FrameFormat::Nv12,
            width: 2,
            height: 2,
            stride: 2,
        };
        let p = to_pixels(&nv12, &[16, 235, 126, 81, 90, 240], Color::Rgb);
        assert_eq!(&p.data[..3], &yuv_to_rgb(16, 90, 240));
        assert_eq!(&p.data[9..], &yuv_to_rgb(81, 90, 240));
        let yuyv = FrameSpec {
            format: FrameFormat::Yuyv,
            width: 2,
            height: 1,
            stride: 4,
        };
        let p = to_pixels(&yuyv, &[50, 100, 200, 150], Color::Rgb);
        assert_eq!(&p.data[3..], &yuv_to_rgb(200, 100, 150));
        assert_eq!(
            to_pixels(&yuyv, &[50, 100, 200, 150], Color::Gray).data,
            vec![50, 200]
        );
    }

    #[test]
    fn stride_padding_is_skipped() {
        let spec = FrameSpec {
            format: FrameFormat::Rgb24,
            width: 2,
            height: 2,
            stride: 8,
        };
        let data = [1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12];
        let p = to_pixels(&spec, &data, Color::Rgb);
        assert_eq!(p.data, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }
}
