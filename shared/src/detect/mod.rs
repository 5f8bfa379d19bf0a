//! Object detection, sans IO: the manifest's `detection` block (how a model's outputs become
//! boxes), the typed answer both daemons serialise (boxes, class, score), the fixed-size tensor
//! that carries an answer over OIP v2 and the wire, and the post-processing itself
//! ([`decode`]: NanoDet and CenterFace heads; [`nms`]: per-class non-maximum suppression), so
//! the hub and the agent run the same code; [`cascade`]: which frames go to the hub.

pub mod cascade;
pub mod decode;
pub mod nms;

use cascade::CascadeSpec;
use serde::{Deserialize, Serialize};

/// Name of the output tensor that carries detections: `[rows, max_detections, 6]`, each
/// `x1, y1, x2, y2, score, class` in input-image pixels; unused slots are all zero with class
/// `-1`.
pub const DETECTIONS_OUTPUT: &str = "detections";
/// Values per detection in [`DETECTIONS_OUTPUT`].
pub const DETECTION_FIELDS: usize = 6;

/// How a detection model's raw outputs become boxes (manifest `variants.<v>.detection`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionSpec {
    /// Candidates scoring below this are dropped before NMS (0..1).
    pub score_threshold: f32,
    /// NMS drops a box overlapping a better one of its class by more than this IoU.
    pub iou_threshold: f32,
    /// At most this many boxes per image, best first.
    pub max_detections: usize,
    /// True: NMS across classes (one class models, or one box per object whatever the class).
    #[serde(default)]
    pub class_agnostic: bool,
    /// The head's output layout.
    pub decode: Decode,
    /// The cascade's default policy for this (edge) variant: which frames go to the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<cascade::CascadeSpec>,
    /// A face detector's privacy margin (0..`score_threshold`; unset: none): boxes NMS keeps
    /// down to this score are decoded too (under the answer, with the cascade's) and the
    /// agent's face blur blurs them with the answered ones, so that a face the device's INT8
    /// model scores a little under `score_threshold` (other pixels, other rounding) is
    /// blurred all the same before a detector checking at `score_threshold` sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blur_threshold: Option<f32>,
}

impl DetectionSpec {
    /// The lowest score decoded: the answer's `score_threshold`, or the cascade bands' bottom
    /// or the blur's threshold when they reach under it (those boxes feed the routing signals
    /// and the face blur, not the answer).
    pub fn candidate_floor(&self) -> f32 {
        let band = self
            .cascade
            .as_ref()
            .map_or(self.score_threshold, CascadeSpec::floor);
        let blur = self.blur_threshold.unwrap_or(self.score_threshold);
        self.score_threshold.min(band).min(blur)
    }

    /// The score above which the face blur blurs a box: `blur_threshold`, else the answer's
    /// `score_threshold`.
    pub fn blur_floor(&self) -> f32 {
        self.blur_threshold
            .unwrap_or(self.score_threshold)
            .min(self.score_threshold)
    }
}

/// A detection head's output layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Decode {
    /// NanoDet (GFL head): per stride, class scores `[N, cells, classes]` (already through a
    /// sigmoid) and box distances `[N, cells, 4 * (reg_max + 1)]`: per side (left, top, right,
    /// bottom) a softmax over `reg_max + 1` bins whose expectation is the distance in strides
    /// from the cell centre `((x + center_offset) * stride, (y + center_offset) * stride)`.
    Nanodet {
        /// Highest bin index (10 for NanoDet-g: 11 bins).
        reg_max: usize,
        /// Cell centre offset in cells (0.0 or 0.5).
        center_offset: f32,
        /// One entry per feature level.
        levels: Vec<Level>,
    },
    /// CenterFace: a heatmap `[N, 1, H/s, W/s]` (sigmoid), log box sizes `[N, 2, ..]` (height,
    /// width; times the stride after `exp`) and centre offsets `[N, 2, ..]` (y, x).
    Centerface {
        /// Output stride (4).
        stride: u32,
        /// Heatmap output name.
        heatmap: String,
        /// Log-size output name.
        scale: String,
        /// Offset output name.
        offset: String,
    },
}

/// One NanoDet feature level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Stride in input pixels.
    pub stride: u32,
    /// Class-score output name.
    pub scores: String,
    /// Box-distribution output name.
    pub boxes: String,
    /// `[width, height]` of the input this level's branch of the graph sees, when the graph
    /// resizes the model input itself (several scales of one net in one file, their levels'
    /// candidates merged by one NMS: a multi-scale ensemble). The level's grid is this size over
    /// the stride and its boxes are scaled back to the model input. Unset (the default): the
    /// model input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<[u32; 2]>,
    /// The level's branch saw its input mirrored left-right (test-time augmentation in the
    /// graph): its boxes are mirrored back (x -> width - x of the branch's input) before they
    /// are scaled to the model input. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirrored: bool,
}

impl Decode {
    /// Every output name the decoder reads.
    pub fn output_names(&self) -> Vec<&str> {
        match self {
            Self::Nanodet { levels, .. } => levels
                .iter()
                .flat_map(|l| [l.scores.as_str(), l.boxes.as_str()])
                .collect(),
            Self::Centerface {
                heatmap,
                scale,
                offset,
                ..
            } => vec![heatmap, scale, offset],
        }
    }
}

/// One detected object, in input-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Left, top, right, bottom.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Class index (line of the labels file).
    pub class: usize,
    /// Class label.
    pub label: String,
    /// Confidence, 0..1.
    pub score: f32,
}

/// Per-image signals a routing policy can read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectionSignals {
    /// Boxes kept.
    pub count: usize,
    /// Score of the least confident kept box (1.0 with no box).
    pub min_score: f32,
    /// Score of the most confident kept box (0.0 with no box).
    pub max_score: f32,
    /// Boxes in the cascade's uncertain band, including those under the answer threshold (0
    /// without a cascade policy).
    #[serde(default)]
    pub uncertain: usize,
    /// Boxes of classes outside the policy's `common_classes` in its second band, including
    /// those under the answer threshold (0 without a second band).
    #[serde(default)]
    pub rare: usize,
}

impl DetectionSignals {
    /// Count and score range of `boxes` (`uncertain` left 0).
    pub fn of(boxes: &[Detection]) -> Self {
        let scores = boxes.iter().map(|d| d.score);
        Self {
            count: boxes.len(),
            min_score: scores.clone().fold(1.0, f32::min),
            max_score: scores.fold(0.0, f32::max),
            uncertain: 0,
            rare: 0,
        }
    }
}

/// The detections of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Detections {
    /// Width of the image the boxes refer to, pixels.
    pub width: u32,
    /// Height of the image, pixels.
    pub height: u32,
    /// Kept boxes, best first.
    pub boxes: Vec<Detection>,
}

impl Detections {
    /// The routing signals of these boxes.
    pub fn signals(&self) -> DetectionSignals {
        DetectionSignals::of(&self.boxes)
    }

    /// Appends this image's row to a [`DETECTIONS_OUTPUT`] tensor body of `slots` boxes.
    pub fn write_row(&self, slots: usize, out: &mut Vec<f32>) {
        for i in 0..slots {
            match self.boxes.get(i) {
                Some(d) => {
                    out.extend_from_slice(&d.bbox);
                    out.extend_from_slice(&[d.score, d.class as f32]);
                }
                None => out.extend_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.0, -1.0]),
            }
        }
    }

    /// Reads one row of a [`DETECTIONS_OUTPUT`] tensor back (unused slots skipped); labels
    /// from `labels` by class index.
    pub fn from_row(row: &[f32], labels: &[String], width: u32, height: u32) -> Self {
        let boxes = row
            .chunks_exact(DETECTION_FIELDS)
            .filter(|d| d[5] >= 0.0)
            .map(|d| {
                let class = d[5] as usize;
                Detection {
                    bbox: [d[0], d[1], d[2], d[3]],
                    class,
                    label: label_of(labels, class),
                    score: d[4],
                }
            })
            .collect();
        Self {
            width,
            height,
            boxes,
        }
    }
}

/// The answer for one image of a detection model, as `/v1/detect/{model}`, `infer --json`
/// and the OIP v2 response `parameters` give it (the daemons add `request_id`, `reason`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectAnswer {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Variant that ran (`edge`, `cloud`).
    pub variant: String,
    /// `local` or `cloud`.
    pub route: String,
    /// True when the policy wanted the hub but the answer is local.
    pub degraded: bool,
    /// Execution provider that ran it.
    pub ep: String,
    /// Width of the image the boxes refer to, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Boxes, best first.
    pub detections: Vec<Detection>,
    /// Routing signals.
    pub signals: DetectionSignals,
    /// Submission to answer, milliseconds.
    pub latency_ms: f64,
}

/// The label of class `i`, `class_<i>` past the end of the list.
pub fn label_of(labels: &[String], i: usize) -> String {
    labels
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("class_{i}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_round_trips_through_the_tensor() {
        let labels = vec!["person".to_string(), "car".into()];
        let d = Detections {
            width: 640,
            height: 480,
            boxes: vec![
                Detection {
                    bbox: [1.0, 2.0, 30.0, 40.0],
                    class: 1,
                    label: "car".into(),
                    score: 0.9,
                },
                Detection {
                    bbox: [5.0, 6.0, 7.0, 8.0],
                    class: 0,
                    label: "person".into(),
                    score: 0.4,
                },
            ],
        };
        let mut row = Vec::new();
        d.write_row(3, &mut row);
        assert_eq!(row.len(), 3 * DETECTION_FIELDS);
        assert_eq!(Detections::from_row(&row, &labels, 640, 480), d);
        let s = d.signals();
        assert_eq!((s.count, s.min_score, s.max_score), (2, 0.4, 0.9));
    }

    #[test]
    fn the_manifest_block_parses() {
        let spec: DetectionSpec = serde_json::from_str(
            r#"{"score_threshold":0.35,"iou_threshold":0.5,"max_detections":100,
            "decode":{"type":"nanodet","reg_max":10,"center_offset":0.0,
            "levels":[{"stride":8,"scores":"cls_8","boxes":"reg_8"}]}}"#,
        )
        .expect("parses");
        assert_eq!(spec.decode.output_names(), vec!["cls_8", "reg_8"]);
        assert!(!spec.class_agnostic);
        assert_eq!((spec.candidate_floor(), spec.blur_floor()), (0.35, 0.35));
        let face: DetectionSpec = serde_json::from_str(
            r#"{"score_threshold":0.5,"iou_threshold":0.3,"max_detections":100,
            "blur_threshold":0.3,"cascade":{"uncertain_low":0.4,"uncertain_high":0.6},
            "decode":{"type":"centerface","stride":4,"heatmap":"h","scale":"s","offset":"o"}}"#,
        )
        .expect("parses");
        assert_eq!((face.candidate_floor(), face.blur_floor()), (0.3, 0.3));
        let bad = r#"{"score_threshold":0.3,"iou_threshold":0.3,"max_detections":1,
            "decode":{"type":"yolo"}}"#;
        assert!(serde_json::from_str::<DetectionSpec>(bad).is_err());
    }
}
