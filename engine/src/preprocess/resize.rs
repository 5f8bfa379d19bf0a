//! SIMD resize of packed 8-bit pixels through `fast_image_resize`: antialiased bilinear
//! convolution (the filter PIL's `Image.BILINEAR` uses), with the source rectangle of a
//! [`Plan`] as the crop. One resizer per thread keeps its scratch buffers between calls.

use super::PreprocessError;
use super::geometry::Plan;
use super::image::Pixels;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::cell::RefCell;

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn pixel_type(channels: usize) -> Result<PixelType, PreprocessError> {
    match channels {
        1 => Ok(PixelType::U8),
        3 => Ok(PixelType::U8x3),
        c => Err(PreprocessError::Decode(format!(
            "{c} channels: only gray and RGB are resized"
        ))),
    }
}

/// The plan's source rectangle of `src`, resized to `plan.out_w` x `plan.out_h`.
pub fn resize(src: &Pixels, plan: &Plan) -> Result<Pixels, PreprocessError> {
    let pt = pixel_type(src.channels)?;
    let err = |e: &dyn std::fmt::Display| PreprocessError::Decode(format!("resize: {e}"));
    let from = ImageRef::new(src.width, src.height, &src.data, pt).map_err(|e| err(&e))?;
    let len = plan.out_w as usize * plan.out_h as usize * src.channels;
    let mut to = Image::from_vec_u8(plan.out_w, plan.out_h, super::scratch::bytes(len), pt)
        .map_err(|e| err(&e))?;
    // A rectangle over the whole side can pass its edge by a rounding error (a plan rescaled
    // to a reduced-DCT decode), which the resizer refuses: keep it inside the image.
    let src_w = plan.src_w.min(f64::from(src.width) - plan.src_x);
    let src_h = plan.src_h.min(f64::from(src.height) - plan.src_y);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(plan.src_x, plan.src_y, src_w, src_h);
    RESIZER
        .with(|r| r.borrow_mut().resize(&from, &mut to, &opts))
        .map_err(|e| err(&e))?;
    Ok(Pixels {
        width: plan.out_w,
        height: plan.out_h,
        channels: src.channels,
        data: to.into_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rectangle_past_the_edge_by_a_rounding_error_is_resized() {
        let src = Pixels::new(9, 7, 3, vec![128; 9 * 7 * 3]).expect("size");
        // The whole 9x7 image to 4x4, its sides over by a rounding error.
        let plan = Plan {
            src_width: 9,
            src_height: 7,
            src_x: 0.0,
            src_y: 0.0,
            src_w: 9.0 + 1e-12,
            src_h: 7.0 + 1e-12,
            out_w: 4,
            out_h: 4,
            off_x: 0,
            off_y: 0,
            width: 4,
            height: 4,
        };
        let out = resize(&src, &plan).expect("resized");
        assert_eq!((out.width, out.height), (4, 4));
    }
}
