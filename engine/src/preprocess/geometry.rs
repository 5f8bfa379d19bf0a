//! Where a source image lands in the model's input: the source rectangle, the size it is
//! resized to and its offset in the tensor, for stretch, shorter-side centre crop and
//! letterbox. Detection maps boxes back through [`Plan::to_source`].

use tandem_shared::manifest::{ImagePreprocess, Resize};

/// One image's placement: `src_*` (source pixels, may be fractional) is resized to
/// `out_w` x `out_h` and written at (`off_x`, `off_y`) of the `width` x `height` tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Source width, pixels.
    pub src_width: u32,
    /// Source height, pixels.
    pub src_height: u32,
    /// Left of the source rectangle.
    pub src_x: f64,
    /// Top of the source rectangle.
    pub src_y: f64,
    /// Width of the source rectangle.
    pub src_w: f64,
    /// Height of the source rectangle.
    pub src_h: f64,
    /// Width the rectangle is resized to.
    pub out_w: u32,
    /// Height the rectangle is resized to.
    pub out_h: u32,
    /// Left of the resized rectangle in the tensor.
    pub off_x: u32,
    /// Top of the resized rectangle in the tensor.
    pub off_y: u32,
    /// Tensor width.
    pub width: u32,
    /// Tensor height.
    pub height: u32,
}

impl Plan {
    /// The placement of a `src_width` x `src_height` image under `p`.
    pub fn new(src_width: u32, src_height: u32, p: &ImagePreprocess) -> Self {
        let (w, h) = (src_width.max(1), src_height.max(1));
        let (tw, th) = (p.width.max(1), p.height.max(1));
        let full = Self {
            src_width: w,
            src_height: h,
            src_x: 0.0,
            src_y: 0.0,
            src_w: f64::from(w),
            src_h: f64::from(h),
            out_w: tw,
            out_h: th,
            off_x: 0,
            off_y: 0,
            width: tw,
            height: th,
        };
        match p.resize {
            Resize::Stretch => full,
            Resize::ShorterSideCenterCrop => {
                // As before: the shorter side to `side` (the other rounded down), at least the
                // tensor's size, then the centre; here as the source rectangle that maps to it.
                let side = u64::from(p.shorter_side.unwrap_or(tw.max(th)));
                let (nw, nh) = if w <= h {
                    (side, u64::from(h) * side / u64::from(w))
                } else {
                    (u64::from(w) * side / u64::from(h), side)
                };
                let (rw, rh) = (nw.max(u64::from(tw)), nh.max(u64::from(th)));
                let (x, y) = ((rw - u64::from(tw)) / 2, (rh - u64::from(th)) / 2);
                let (sx, sy) = (f64::from(w) / rw as f64, f64::from(h) / rh as f64);
                Self {
                    src_x: x as f64 * sx,
                    src_y: y as f64 * sy,
                    src_w: f64::from(tw) * sx,
                    src_h: f64::from(th) * sy,
                    ..full
                }
            }
            Resize::Letterbox => {
                let s = (f64::from(tw) / f64::from(w)).min(f64::from(th) / f64::from(h));
                let out_w = ((f64::from(w) * s).round() as u32).clamp(1, tw);
                let out_h = ((f64::from(h) * s).round() as u32).clamp(1, th);
                Self {
                    out_w,
                    out_h,
                    off_x: (tw - out_w) / 2,
                    off_y: (th - out_h) / 2,
                    ..full
                }
            }
        }
    }

    /// Whether the tensor has a border the image does not cover (letterbox).
    pub fn padded(&self) -> bool {
        self.out_w != self.width || self.out_h != self.height
    }

    /// Whether the source is used as it is (same size, no crop).
    pub fn identity(&self) -> bool {
        self.src_x == 0.0
            && self.src_y == 0.0
            && self.src_w == f64::from(self.out_w)
            && self.src_h == f64::from(self.out_h)
    }

    /// Smallest source size that still only shrinks into the output: a JPEG may be decoded at
    /// a reduced DCT scale down to this.
    pub fn min_source(&self) -> (u32, u32) {
        let need = |out: u32, full: u32, part: f64| {
            (f64::from(out) * f64::from(full) / part.max(1e-9) - 1e-6).ceil() as u32
        };
        (
            need(self.out_w, self.src_width, self.src_w),
            need(self.out_h, self.src_height, self.src_h),
        )
    }

    /// The same placement for the image decoded at `w` x `h` (a reduced DCT scale).
    pub fn rescaled(&self, w: u32, h: u32) -> Self {
        let (fx, fy) = (
            f64::from(w) / f64::from(self.src_width),
            f64::from(h) / f64::from(self.src_height),
        );
        Self {
            src_width: w,
            src_height: h,
            src_x: self.src_x * fx,
            src_y: self.src_y * fy,
            src_w: self.src_w * fx,
            src_h: self.src_h * fy,
            ..*self
        }
    }

    /// A point in tensor pixels to source pixels (box corners of a detection).
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.src_w / f64::from(self.out_w);
        let sy = self.src_h / f64::from(self.out_h);
        (
            (self.src_x + (f64::from(x) - f64::from(self.off_x)) * sx) as f32,
            (self.src_y + (f64::from(y) - f64::from(self.off_y)) * sy) as f32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::manifest::{Color, Layout};

    fn spec(resize: Resize, w: u32, h: u32) -> ImagePreprocess {
        ImagePreprocess {
            layout: Layout::NCHW,
            color: Color::Rgb,
            width: w,
            height: h,
            resize,
            shorter_side: Some(256),
            scale: 1.0,
            mean: vec![0.0],
            std: vec![1.0],
            pad_value: 0,
        }
    }

    #[test]
    fn letterbox_centres_and_maps_back() {
        let p = Plan::new(1920, 1080, &spec(Resize::Letterbox, 416, 416));
        assert_eq!((p.out_w, p.out_h, p.off_x, p.off_y), (416, 234, 0, 91));
        assert!(p.padded());
        let (x, y) = p.to_source(416.0, 91.0 + 234.0);
        assert!((x - 1920.0).abs() < 0.01 && (y - 1080.0).abs() < 0.01);
        assert_eq!(p.to_source(0.0, 91.0), (0.0, 0.0));
    }

    #[test]
    fn centre_crop_is_a_source_rectangle() {
        let p = Plan::new(500, 375, &spec(Resize::ShorterSideCenterCrop, 224, 224));
        // 500x375 -> 341x256, centre 224x224 at (58, 16).
        assert!((p.src_x - 58.0 * 500.0 / 341.0).abs() < 1e-9);
        assert!((p.src_h - 224.0 * 375.0 / 256.0).abs() < 1e-9);
        assert_eq!(p.min_source(), (341, 256));
    }

    #[test]
    fn stretch_needs_the_output_size() {
        let p = Plan::new(3840, 2160, &spec(Resize::Stretch, 224, 224));
        assert_eq!(p.min_source(), (224, 224));
        assert!(!p.identity());
        assert!(Plan::new(224, 224, &spec(Resize::Stretch, 224, 224)).identity());
        let r = p.rescaled(480, 270);
        assert_eq!((r.src_w, r.src_h), (480.0, 270.0));
    }
}
