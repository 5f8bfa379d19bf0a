//! Detection on a worker: where each image landed in the model input (to map boxes back), and
//! the raw head outputs of a batch to typed [`Detections`] plus the fixed-size `detections`
//! tensor that OIP v2 and the wire carry (`tandem_shared::detect`).

use crate::engine::{InferenceError, OutputTensor};
use crate::preprocess::geometry::Plan;
use tandem_shared::detect::nms::{InputPixels, ToSource, detect_with_below};
use tandem_shared::detect::{
    DETECTION_FIELDS, DETECTIONS_OUTPUT, Detection, DetectionSpec, Detections, decode::RowOutput,
};
use tandem_shared::manifest::{ImagePreprocess, Layout};
use tandem_shared::oip::TensorData;

impl ToSource for Plan {
    fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        Plan::to_source(self, x, y)
    }
    fn source_size(&self) -> (u32, u32) {
        (self.src_width, self.src_height)
    }
}

/// Reverses the channels of a batch prepared as RGB (with `mean`/`std` reversed:
/// `ImagePreprocess::rgb_equivalent`) into the BGR tensor the model takes.
pub fn rgb_to_bgr(data: &mut [f32], p: &ImagePreprocess) {
    let plane = p.width as usize * p.height as usize;
    match p.layout {
        Layout::NCHW => {
            for image in data.chunks_exact_mut(3 * plane) {
                let (r, rest) = image.split_at_mut(plane);
                r.swap_with_slice(&mut rest[plane..]);
            }
        }
        Layout::NHWC => data.chunks_exact_mut(3).for_each(|px| px.swap(0, 2)),
    }
}

/// One batch's detections: per image, the boxes answered and those kept under the answer
/// threshold for the cascade's signals; and the `detections` tensor (answered boxes only).
#[derive(Debug)]
pub struct Detected {
    /// Per image, the answer.
    pub detections: Vec<Detections>,
    /// Per image, boxes NMS kept under `score_threshold` down to the cascade band's bottom.
    pub below: Vec<Vec<Detection>>,
    /// `[rows, max_detections, 6]`.
    pub tensor: OutputTensor,
}

/// The raw outputs of `rows` images to their detections and the `detections` tensor
/// (`[rows, max_detections, 6]`). Without placements (prepared tensors), boxes stay in
/// model-input pixels of `input_size`.
pub fn postprocess(
    spec: &DetectionSpec,
    raw: &[OutputTensor],
    places: Option<&[Plan]>,
    input_size: (u32, u32),
    labels: &[String],
) -> Result<Detected, InferenceError> {
    let rows = raw
        .first()
        .and_then(|o| o.shape.first())
        .copied()
        .unwrap_or(0)
        .max(0) as usize;
    let mut all = Vec::with_capacity(rows);
    let mut below = Vec::with_capacity(rows);
    for row in 0..rows {
        let outs: Vec<RowOutput<'_>> = raw
            .iter()
            .filter_map(|o| match &o.data {
                TensorData::F32(d) => {
                    let per = d.len() / rows.max(1);
                    Some(RowOutput {
                        name: &o.name,
                        shape: o.shape.get(1..).unwrap_or(&[]),
                        data: &d[row * per..(row + 1) * per],
                    })
                }
                _ => None,
            })
            .collect();
        let found = match places.and_then(|p| p.get(row)) {
            Some(place) => detect_with_below(spec, &outs, input_size, place, labels),
            None => {
                let (width, height) = input_size;
                detect_with_below(
                    spec,
                    &outs,
                    input_size,
                    &InputPixels { width, height },
                    labels,
                )
            }
        };
        let (answer, under) = found.map_err(|e| InferenceError::Runtime(e.to_string()))?;
        all.push(answer);
        below.push(under);
    }
    let slots = spec.max_detections;
    let mut data = Vec::with_capacity(rows * slots * DETECTION_FIELDS);
    for d in &all {
        d.write_row(slots, &mut data);
    }
    let tensor = OutputTensor {
        name: DETECTIONS_OUTPUT.into(),
        shape: vec![rows as i64, slots as i64, DETECTION_FIELDS as i64],
        data: TensorData::F32(data),
    };
    Ok(Detected {
        detections: all,
        below,
        tensor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::manifest::{Color, Resize};

    fn spec(color: Color, layout: Layout) -> ImagePreprocess {
        ImagePreprocess {
            layout,
            color,
            width: 2,
            height: 1,
            resize: Resize::Stretch,
            shorter_side: None,
            scale: 1.0,
            mean: vec![1.0, 2.0, 3.0],
            std: vec![4.0, 5.0, 6.0],
            pad_value: 0,
        }
    }

    #[test]
    fn bgr_is_rgb_reversed() {
        let bgr = spec(Color::Bgr, Layout::NCHW);
        let rgb = bgr.rgb_equivalent();
        assert_eq!(
            (rgb.color, &rgb.mean, &rgb.std),
            (Color::Rgb, &vec![3.0, 2.0, 1.0], &vec![6.0, 5.0, 4.0])
        );
        // NCHW, 2 pixels: planes R, G, B become B, G, R.
        let mut d = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        rgb_to_bgr(&mut d, &rgb);
        assert_eq!(d, vec![5.0, 6.0, 3.0, 4.0, 1.0, 2.0]);
        let mut d = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        rgb_to_bgr(&mut d, &spec(Color::Rgb, Layout::NHWC));
        assert_eq!(d, vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
    }

    #[test]
    fn stretch_maps_input_pixels_back_to_the_image() {
        let mut p = spec(Color::Rgb, Layout::NCHW);
        (p.width, p.height) = (416, 416);
        let plan = Plan::new(832, 208, &p);
        assert_eq!(ToSource::to_source(&plan, 416.0, 416.0), (832.0, 208.0));
        assert_eq!(ToSource::to_source(&plan, 104.0, 208.0), (208.0, 104.0));
        assert_eq!(plan.source_size(), (832, 208));
    }
}
