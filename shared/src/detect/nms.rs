//! Greedy non-maximum suppression (per class unless class-agnostic) and the whole per-image
//! post-processing: decode, NMS, boxes mapped back to image pixels.

use super::decode::{Candidate, DecodeError, RowOutput, decode};
use super::{Detection, DetectionSpec, Detections, label_of};

/// Intersection over union of two `x1, y1, x2, y2` boxes (0 when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Indexes of the candidates kept, best first: a candidate is dropped when a kept one (of its
/// class, unless `agnostic`) overlaps it by more than `iou_threshold`. Ties in score keep the
/// lower index first.
pub fn nms(
    c: &[Candidate],
    iou_threshold: f32,
    max_detections: usize,
    agnostic: bool,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[b].score.total_cmp(&c[a].score).then(a.cmp(&b)));
    let mut keep: Vec<usize> = Vec::new();
    for i in order {
        if keep.len() >= max_detections {
            break;
        }
        let suppressed = keep.iter().any(|&k| {
            (agnostic || c[k].class == c[i].class) && iou(&c[k].bbox, &c[i].bbox) > iou_threshold
        });
        if !suppressed {
            keep.push(i);
        }
    }
    keep
}

/// Where the model input came from: maps a point in model-input pixels to image pixels.
pub trait ToSource {
    /// Image pixels of input point (`x`, `y`).
    fn to_source(&self, x: f32, y: f32) -> (f32, f32);
    /// Image width and height.
    fn source_size(&self) -> (u32, u32);
}

/// Boxes in model-input pixels: for prepared tensors, whose source the engine does not know.
#[derive(Debug, Clone, Copy)]
pub struct InputPixels {
    /// Model input width.
    pub width: u32,
    /// Model input height.
    pub height: u32,
}

impl ToSource for InputPixels {
    fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (x, y)
    }
    fn source_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

/// One image's outputs to its detections in image pixels (clipped to the image).
pub fn detect(
    spec: &DetectionSpec,
    outputs: &[RowOutput<'_>],
    input: (u32, u32),
    source: &impl ToSource,
    labels: &[String],
) -> Result<Detections, DecodeError> {
    detect_with_below(spec, outputs, input, source, labels).map(|(d, _)| d)
}

/// [`detect`], plus the boxes NMS kept under `score_threshold` down to the cascade band's
/// bottom ([`DetectionSpec::candidate_floor`]), best first: the routing signals read them, the
/// answer leaves them out. The answered boxes are those [`detect`] gives: a box is only ever
/// suppressed by a better one, so decoding lower changes nothing above the threshold.
pub fn detect_with_below(
    spec: &DetectionSpec,
    outputs: &[RowOutput<'_>],
    (in_w, in_h): (u32, u32),
    source: &impl ToSource,
    labels: &[String],
) -> Result<(Detections, Vec<Detection>), DecodeError> {
    let cands = decode(&spec.decode, outputs, in_w, in_h, spec.candidate_floor())?;
    let keep = nms(
        &cands,
        spec.iou_threshold,
        spec.max_detections,
        spec.class_agnostic,
    );
    let (w, h) = source.source_size();
    let (fw, fh) = (w as f32, h as f32);
    let mut boxes: Vec<Detection> = keep
        .into_iter()
        .map(|i| {
            let c = &cands[i];
            let (x1, y1) = source.to_source(c.bbox[0], c.bbox[1]);
            let (x2, y2) = source.to_source(c.bbox[2], c.bbox[3]);
            Detection {
                bbox: [
                    x1.clamp(0.0, fw),
                    y1.clamp(0.0, fh),
                    x2.clamp(0.0, fw),
                    y2.clamp(0.0, fh),
                ],
                class: c.class,
                label: label_of(labels, c.class),
                score: c.score,
            }
        })
        .collect();
    // Best first: the boxes under the answer threshold are the tail.
    let answered = boxes
        .iter()
        .position(|d| d.score <= spec.score_threshold)
        .unwrap_or(boxes.len());
    let below = boxes.split_off(answered);
    Ok((
        Detections {
            width: w,
            height: h,
            boxes,
        },
        below,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(bbox: [f32; 4], score: f32, class: usize) -> Candidate {
        Candidate { bbox, score, class }
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn nms_is_per_class_unless_agnostic() {
        let c = [
            cand([0.0, 0.0, 10.0, 10.0], 0.9, 0),
            cand([1.0, 1.0, 10.0, 10.0], 0.8, 0), // overlaps 0: dropped
            cand([1.0, 1.0, 10.0, 10.0], 0.7, 1), // other class: kept
            cand([50.0, 50.0, 60.0, 60.0], 0.95, 0),
        ];
        assert_eq!(nms(&c, 0.5, 10, false), vec![3, 0, 2]);
        assert_eq!(nms(&c, 0.5, 10, true), vec![3, 0]);
        assert_eq!(nms(&c, 0.5, 1, false), vec![3]);
        assert_eq!(nms(&c, 0.95, 10, false), vec![3, 0, 1, 2]);
    }
}
