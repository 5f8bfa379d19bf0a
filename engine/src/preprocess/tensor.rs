//! Normalise and lay out in one pass: packed 8-bit pixels (already at the plan's output size)
//! straight into the model's f32 tensor, through a 256-entry table per channel, with the
//! letterbox border filled with the normalised pad value.

use super::geometry::Plan;
use tandem_shared::manifest::{ImagePreprocess, Layout};

/// `(v * scale - mean[c]) / std[c]` for every 8-bit `v`, per channel.
pub fn tables(p: &ImagePreprocess) -> Vec<[f32; 256]> {
    let mean = |ch: usize| p.mean.get(ch).or(p.mean.first()).copied().unwrap_or(0.0);
    let std = |ch: usize| p.std.get(ch).or(p.std.first()).copied().unwrap_or(1.0);
    (0..p.color.channels())
        .map(|ch| {
            let mut t = [0.0f32; 256];
            for (v, slot) in t.iter_mut().enumerate() {
                *slot = (v as f32 * p.scale - mean(ch)) / std(ch);
            }
            t
        })
        .collect()
}

/// Writes `pixels` (`plan.out_w` x `plan.out_h`, packed, C channels) into `out` (C*H*W).
pub fn write(pixels: &[u8], plan: &Plan, p: &ImagePreprocess, out: &mut [f32]) {
    let lut = tables(p);
    let c = lut.len();
    let (w, h) = (plan.width as usize, plan.height as usize);
    let (ow, oh) = (plan.out_w as usize, plan.out_h as usize);
    let (ox, oy) = (plan.off_x as usize, plan.off_y as usize);
    if plan.padded() {
        let pad = usize::from(p.pad_value);
        match p.layout {
            Layout::NCHW => {
                for (ch, plane) in out.chunks_exact_mut(w * h).enumerate() {
                    plane.fill(lut[ch][pad]);
                }
            }
            Layout::NHWC => {
                for px in out.chunks_exact_mut(c) {
                    for (ch, v) in px.iter_mut().enumerate() {
                        *v = lut[ch][pad];
                    }
                }
            }
        }
    }
    match p.layout {
        Layout::NCHW if c == 3 => {
            // One pass over the packed pixels, writing the three planes together.
            let (r, rest) = out.split_at_mut(w * h);
            let (g, b) = rest.split_at_mut(w * h);
            let (tr, tg, tb) = (&lut[0], &lut[1], &lut[2]);
            for (y, src) in pixels.chunks_exact(ow * 3).take(oh).enumerate() {
                let start = (oy + y) * w + ox;
                let rows = r[start..start + ow]
                    .iter_mut()
                    .zip(&mut g[start..start + ow])
                    .zip(&mut b[start..start + ow]);
                for (((r, g), b), px) in rows.zip(src.chunks_exact(3)) {
                    *r = tr[usize::from(px[0])];
                    *g = tg[usize::from(px[1])];
                    *b = tb[usize::from(px[2])];
                }
            }
        }
        Layout::NCHW => {
            for (ch, plane) in out.chunks_exact_mut(w * h).enumerate() {
                let t = &lut[ch];
                for (y, src) in pixels.chunks_exact(ow * c).take(oh).enumerate() {
                    let start = (oy + y) * w + ox;
                    let dst = &mut plane[start..start + ow];
                    for (d, px) in dst.iter_mut().zip(src[ch..].iter().step_by(c)) {
                        *d = t[usize::from(*px)];
                    }
                }
            }
        }
        Layout::NHWC => {
            for (y, src) in pixels.chunks_exact(ow * c).take(oh).enumerate() {
                let start = ((oy + y) * w + ox) * c;
                let dst = &mut out[start..start + ow * c];
                for (i, (d, px)) in dst.iter_mut().zip(src).enumerate() {
                    *d = lut[i % c][usize::from(*px)];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::manifest::{Color, Resize};

    fn prep(layout: Layout) -> ImagePreprocess {
        ImagePreprocess {
            layout,
            color: Color::Rgb,
            width: 5,
            height: 4,
            resize: Resize::Letterbox,
            shorter_side: None,
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            pad_value: 114,
        }
    }

    /// The RGB planes written in one pass hold what the formula gives per value, in each
    /// value's place, with the letterbox border at the normalised pad value.
    #[test]
    fn planes_hold_each_normalised_value_in_its_place() {
        let plan = Plan {
            src_width: 3,
            src_height: 2,
            src_x: 0.0,
            src_y: 0.0,
            src_w: 3.0,
            src_h: 2.0,
            out_w: 3,
            out_h: 2,
            off_x: 1,
            off_y: 1,
            width: 5,
            height: 4,
        };
        let pixels: Vec<u8> = (0..18u8).map(|i| i * 13).collect();
        for layout in [Layout::NCHW, Layout::NHWC] {
            let p = prep(layout);
            let norm = |ch: usize, v: u8| (f32::from(v) * p.scale - p.mean[ch]) / p.std[ch];
            let mut out = vec![f32::NAN; 3 * 5 * 4];
            write(&pixels, &plan, &p, &mut out);
            for y in 0..4 {
                for x in 0..5 {
                    for ch in 0..3 {
                        let inside = (1..3).contains(&y) && (1..4).contains(&x);
                        let v = if inside {
                            pixels[((y - 1) * 3 + (x - 1)) * 3 + ch]
                        } else {
                            114
                        };
                        let at = match layout {
                            Layout::NCHW => ch * 20 + y * 5 + x,
                            Layout::NHWC => (y * 5 + x) * 3 + ch,
                        };
                        assert_eq!(out[at], norm(ch, v), "{layout:?} y {y} x {x} c {ch}");
                    }
                }
            }
        }
    }
}
