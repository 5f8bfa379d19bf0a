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
