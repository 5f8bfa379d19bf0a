//! What an OIP v2 response carries besides the model's own outputs, built from the typed
//! answer: the `parameters` of one answered row ([`RowParameters`]: the classification or the
//! boxes, as `/v1/classify` and `/v1/detect` give them) and, for a detection model, the boxes
//! as tensors ([`detection_outputs`]: `boxes`, `scores`, `classes`, `num_detections`).

use crate::Inference;
use serde::Serialize;
use serde_json::{Map, Value};
use tandem_shared::answer::Classification;
use tandem_shared::detect::{Detection, DetectionSignals, Detections};
use tandem_shared::oip::TensorData;

/// Names of the detection tensors an OIP v2 response adds (after the model's `detections`).
pub const DETECTION_TENSORS: [&str; 4] = ["boxes", "scores", "classes", "num_detections"];

/// One row's answer in a response's `parameters`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RowParameters {
    /// A classification: `label`, `score`, `index`, `top_k`, `signals`.
    Class(Classification),
    /// A detection: the image's size, the boxes (`box`, `class`, `label`, `score` each) and
    /// their signals.
    Boxes {
        /// Width of the image the boxes refer to, pixels.
        width: u32,
        /// Height, pixels.
        height: u32,
        /// Boxes, best first.
        detections: Vec<Detection>,
        /// Count and score range of the boxes.
        signals: DetectionSignals,
    },
}

impl RowParameters {
    /// Row `row` of an inference (`None` when absent).
    pub fn of(inf: &Inference, row: usize) -> Option<Self> {
        match inf.detections.get(row) {
            Some(d) => Some(Self::boxes(d, d.signals())),
            None => inf.predictions.get(row).cloned().map(Self::Class),
        }
    }

    /// The boxes of one image with the signals the answer reports.
    pub fn boxes(d: &Detections, signals: DetectionSignals) -> Self {
        Self::Boxes {
            width: d.width,
            height: d.height,
            detections: d.boxes.clone(),
            signals,
        }
    }
}

/// A typed value as the JSON object a response's `parameters` is (empty when it does not
/// serialise to an object).
pub fn to_map(v: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The boxes of every row as tensors, padded to the most boxes of any row: `boxes` FP32
/// `[rows, n, 4]` (x1, y1, x2, y2 in image pixels), `scores` FP32 `[rows, n]`, `classes` INT64
/// `[rows, n]` (-1 in unused slots), `num_detections` INT64 `[rows]`. Empty for a
/// classification.
pub fn detection_outputs(rows: &[Detections]) -> Vec<(&'static str, Vec<i64>, TensorData)> {
    if rows.is_empty() {
        return Vec::new();
    }
    let n = rows.iter().map(|d| d.boxes.len()).max().unwrap_or(0);
    let (r, width) = (rows.len() as i64, n as i64);
    let mut boxes = Vec::with_capacity(rows.len() * n * 4);
    let mut scores = Vec::with_capacity(rows.len() * n);
    let mut classes = Vec::with_capacity(rows.len() * n);
    for d in rows {
        for i in 0..n {
            match d.boxes.get(i) {
                Some(b) => {
                    boxes.extend_from_slice(&b.bbox);
                    scores.push(b.score);
                    classes.push(b.class as i64);
                }
                None => {
                    boxes.extend_from_slice(&[0.0; 4]);
                    scores.push(0.0);
                    classes.push(-1);
                }
            }
        }
    }
    let counts = rows.iter().map(|d| d.boxes.len() as i64).collect();
    vec![
        ("boxes", vec![r, width, 4], TensorData::F32(boxes)),
        ("scores", vec![r, width], TensorData::F32(scores)),
        ("classes", vec![r, width], TensorData::I64(classes)),
        ("num_detections", vec![r], TensorData::I64(counts)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_padded_to_the_most_boxes() {
        let bus = Detection {
            bbox: [1.0, 2.0, 3.0, 4.0],
            class: 5,
            label: "bus".into(),
            score: 0.9,
        };
        let rows = [
            Detections {
                width: 10,
                height: 10,
                boxes: vec![bus.clone(), bus.clone()],
            },
            Detections::default(),
        ];
        let t = detection_outputs(&rows);
        let names: Vec<&str> = t.iter().map(|x| x.0).collect();
        assert_eq!(names, DETECTION_TENSORS);
        assert_eq!(t[0].1, vec![2, 2, 4]);
        assert_eq!(t[2].2, TensorData::I64(vec![5, 5, -1, -1]));
        assert_eq!(t[3].2, TensorData::I64(vec![2, 0]));
        assert!(detection_outputs(&[]).is_empty());
    }
}
