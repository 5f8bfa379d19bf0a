//! The blur itself (pure): each face box, grown by a margin, is pixelated into coarse cells
//! and the cells are then box-blurred together, so no eye, nose or mouth edge is left for a
//! detector to find; and the result encoded as JPEG.

use tandem_engine::preprocess::image::Pixels;

/// Cells across the longer side of a grown face box: few enough that a face detector finds
/// nothing (checked on the labelled set with CenterFace FP32, `tests/privacy.rs`).
pub const CELLS_ACROSS: u32 = 5;

/// Quality of the JPEG a blurred image leaves as.
pub const JPEG_QUALITY: u8 = 90;

/// What was blurred in one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlurReport {
    /// Face boxes blurred.
    pub faces: usize,
    /// Pixels changed (the grown boxes, overlaps counted once per box).
    pub pixels: u64,
}

/// The box `[x1, y1, x2, y2]` (image pixels) grown by `margin` of its width and height on
/// each side, clipped to the image: `(x1, y1, x2, y2)` whole pixels, empty when outside.
pub fn grown(b: [f32; 4], margin: f32, width: u32, height: u32) -> (u32, u32, u32, u32) {
    let (w, h) = ((b[2] - b[0]).max(0.0), (b[3] - b[1]).max(0.0));
    let clip = |v: f32, max: u32| v.clamp(0.0, max as f32);
    let x1 = clip((b[0] - w * margin).floor(), width) as u32;
    let y1 = clip((b[1] - h * margin).floor(), height) as u32;
    let x2 = clip((b[2] + w * margin).ceil(), width) as u32;
    let y2 = clip((b[3] + h * margin).ceil(), height) as u32;
    (x1, y1, x2.max(x1), y2.max(y1))
}

/// Pixelates then smooths every box of `boxes` (image pixels) grown by `margin`, in place.
pub fn blur_boxes(px: &mut Pixels, boxes: &[[f32; 4]], margin: f32) -> BlurReport {
    let mut report = BlurReport::default();
    for b in boxes {
        let (x1, y1, x2, y2) = grown(*b, margin, px.width, px.height);
        if x2 <= x1 || y2 <= y1 {
            continue;
        }
        let cell = ((x2 - x1).max(y2 - y1)).div_ceil(CELLS_ACROSS).max(2);
        pixelate(px, (x1, y1, x2, y2), cell);
        box_blur(px, (x1, y1, x2, y2), cell / 2);
        report.faces += 1;
        report.pixels += u64::from(x2 - x1) * u64::from(y2 - y1);
    }
    report
}

/// Every `cell` x `cell` block of the region takes its mean colour.
fn pixelate(px: &mut Pixels, (x1, y1, x2, y2): (u32, u32, u32, u32), cell: u32) {
    let (c, stride) = (px.channels, px.width as usize * px.channels);
    for cy in (y1..y2).step_by(cell as usize) {
        for cx in (x1..x2).step_by(cell as usize) {
            let (ex, ey) = ((cx + cell).min(x2), (cy + cell).min(y2));
            let n = u64::from(ex - cx) * u64::from(ey - cy);
            let mut sum = [0u64; 3];
            for y in cy..ey {
                let row = y as usize * stride;
                for x in cx..ex {
                    let i = row + x as usize * c;
                    for (k, s) in sum.iter_mut().enumerate().take(c) {
                        *s += u64::from(px.data[i + k]);
                    }
                }
            }
            let mean = sum.map(|s| (s / n.max(1)) as u8);
            for y in cy..ey {
                let row = y as usize * stride;
                for x in cx..ex {
                    let i = row + x as usize * c;
                    px.data[i..i + c].copy_from_slice(&mean[..c]);
                }
            }
        }
    }
}

/// A separable box blur of `radius` inside the region (edge pixels repeated).
fn box_blur(px: &mut Pixels, (x1, y1, x2, y2): (u32, u32, u32, u32), radius: u32) {
    if radius == 0 {
        return;
    }
    let (c, stride) = (px.channels, px.width as usize * px.channels);
    let r = radius as i64;
    let mut line = Vec::new();
    // Rows, then columns.
    for y in y1..y2 {
        let row = y as usize * stride;
        line.clear();
        line.extend_from_slice(&px.data[row + x1 as usize * c..row + x2 as usize * c]);
        smooth(&line, &mut px.data[row + x1 as usize * c..], c, 1, r);
    }
    for x in x1..x2 {
        line.clear();
        let start = y1 as usize * stride + x as usize * c;
        for y in y1..y2 {
            let i = y as usize * stride + x as usize * c;
            line.extend_from_slice(&px.data[i..i + c]);
        }
        smooth(&line, &mut px.data[start..], c, stride / c, r);
    }
}

/// Box-filters `line` (`c` channels a pixel) into `out`, pixel `i` at `out[i * step * c]`: a
/// running sum, so each pixel costs the same whatever the radius.
fn smooth(line: &[u8], out: &mut [u8], c: usize, step: usize, r: i64) {
    let n = (line.len() / c) as i64;
    let at = |j: i64, k: usize| u32::from(line[j.clamp(0, n - 1) as usize * c + k]);
    let width = 2 * r as u32 + 1;
    for k in 0..c {
        let mut sum: u32 = (-r..=r).map(|j| at(j, k)).sum();
        for i in 0..n {
            out[i as usize * step * c + k] = (sum / width) as u8;
            sum = sum + at(i + r + 1, k) - at(i - r, k);
        }
    }
}

/// The pixels as a JPEG of [`JPEG_QUALITY`].
pub fn encode_jpeg(px: &Pixels) -> Result<Vec<u8>, image::ImageError> {
    let color = if px.channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut out = Vec::with_capacity(px.data.len() / 8);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode(&px.data, px.width, px.height, color)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32) -> Pixels {
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [((x + y) % 2 * 255) as u8, x as u8, y as u8]))
            .collect();
        Pixels::new(w, h, 3, data).expect("size")
    }

    #[test]
    fn only_the_grown_box_changes_and_its_detail_is_gone() {
        let before = checker(100, 80);
        let mut px = before.clone();
        let r = blur_boxes(&mut px, &[[40.0, 30.0, 60.0, 50.0]], 0.25);
        assert_eq!(r.faces, 1);
        assert_eq!(
            grown([40.0, 30.0, 60.0, 50.0], 0.25, 100, 80),
            (35, 25, 65, 55)
        );
        assert_eq!(r.pixels, 30 * 30);
        for y in 0..80u32 {
            for x in 0..100u32 {
                let i = (y as usize * 100 + x as usize) * 3;
                let inside = (35..65).contains(&x) && (25..55).contains(&y);
                if !inside {
                    assert_eq!(px.data[i..i + 3], before.data[i..i + 3], "({x},{y})");
                }
            }
        }
        // The checkerboard (0/255 between neighbours) is flattened to near its mean inside.
        let red: Vec<u8> = (25..55)
            .flat_map(|y| (35..65).map(move |x| (y * 100 + x) * 3))
            .map(|i| px.data[i])
            .collect();
        let (lo, hi) = (red.iter().min().copied(), red.iter().max().copied());
        assert!(lo >= Some(100) && hi <= Some(155), "{lo:?}..{hi:?}");
        // Neighbouring pixels inside differ little: no sharp edge is left.
        let jumps = (25..55usize)
            .flat_map(|y| (35..64usize).map(move |x| (y * 100 + x) * 3))
            .map(|i| px.data[i].abs_diff(px.data[i + 3]))
            .max();
        assert!(jumps <= Some(40), "{jumps:?}");
    }

    #[test]
    fn boxes_at_or_past_the_edge_are_clipped() {
        let mut px = checker(20, 10);
        let r = blur_boxes(
            &mut px,
            &[[-5.0, -5.0, 4.0, 4.0], [30.0, 30.0, 40.0, 40.0]],
            0.5,
        );
        assert_eq!(r.faces, 1, "the box outside is skipped");
        assert_eq!(grown([15.0, 5.0, 25.0, 12.0], 0.0, 20, 10), (15, 5, 20, 10));
        let jpeg = encode_jpeg(&px).expect("encode");
        assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]));
    }
}
