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
    let mut to = Image::new(plan.out_w, plan.out_h, pt);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(plan.src_x, plan.src_y, plan.src_w, plan.src_h);
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
