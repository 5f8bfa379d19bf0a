//! Raw head outputs of one image to candidate boxes in model-input pixels (before NMS), per the
//! manifest's [`Decode`]. `models/detection_ref.py` is the Python twin the tests compare with.

use super::Decode;

/// One output tensor of one image (the batch dimension dropped).
#[derive(Debug, Clone, Copy)]
pub struct RowOutput<'a> {
    /// Output name.
    pub name: &'a str,
    /// Shape without the batch dimension.
    pub shape: &'a [i64],
    /// The image's elements.
    pub data: &'a [f32],
}

/// A box before NMS, in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Left, top, right, bottom.
    pub bbox: [f32; 4],
    /// Confidence.
    pub score: f32,
    /// Class index.
    pub class: usize,
}

/// Why the outputs do not fit the declared head.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// A declared output is missing.
    #[error("the model produced no output `{0}`")]
    Missing(String),
    /// An output's shape does not fit the input size and stride.
    #[error("output `{name}` has shape {shape:?}; expected {expected}")]
    Shape {
        /// Output name.
        name: String,
        /// Its shape (batch dropped).
        shape: Vec<i64>,
        /// What was expected.
        expected: String,
    },
}

fn find<'a>(outputs: &[RowOutput<'a>], name: &str) -> Result<RowOutput<'a>, DecodeError> {
    outputs
        .iter()
        .find(|o| o.name == name)
        .copied()
        .ok_or_else(|| DecodeError::Missing(name.to_string()))
}

fn shape_err(o: &RowOutput<'_>, expected: String) -> DecodeError {
    DecodeError::Shape {
        name: o.name.to_string(),
        shape: o.shape.to_vec(),
        expected,
    }
}

/// Decodes one image's outputs: every candidate scoring above `score_threshold`.
pub fn decode(
    head: &Decode,
    outputs: &[RowOutput<'_>],
    in_w: u32,
    in_h: u32,
    score_threshold: f32,
) -> Result<Vec<Candidate>, DecodeError> {
    match head {
        Decode::Nanodet {
            reg_max,
            center_offset,
            levels,
        } => {
            let mut out = Vec::new();
            for l in levels {
                let scores = find(outputs, &l.scores)?;
                let boxes = find(outputs, &l.boxes)?;
                let s = l.stride.max(1);
                // The branch's own input (a resized copy of the model input) or the input.
                let [bw, bh] = l
                    .input_size
                    .map_or([in_w, in_h], |[w, h]| [w.max(1), h.max(1)]);
                let (fw, fh) = (bw.div_ceil(s) as usize, bh.div_ceil(s) as usize);
                let cells = fw * fh;
                let classes = match scores.shape {
                    [n, c] if *n as usize == cells && *c > 0 => *c as usize,
                    _ => return Err(shape_err(&scores, format!("[{cells}, classes]"))),
                };
                let bins = reg_max + 1;
                if boxes.shape != [cells as i64, 4 * bins as i64] {
                    return Err(shape_err(&boxes, format!("[{cells}, {}]", 4 * bins)));
                }
                nanodet_level(
                    scores.data,
                    boxes.data,
                    (fw, classes, bins),
                    (s as f32, *center_offset),
                    (in_w as f32 / bw as f32, in_h as f32 / bh as f32),
                    l.mirrored.then_some(bw as f32),
                    score_threshold,
                    &mut out,
                );
            }
            Ok(out)
        }
        Decode::Centerface {
            stride,
            heatmap,
            scale,
            offset,
        } => {
            let heat = find(outputs, heatmap)?;
            let scale = find(outputs, scale)?;
            let offset = find(outputs, offset)?;
            let (h, w) = match heat.shape {
                [1, h, w] => (*h as usize, *w as usize),
                _ => return Err(shape_err(&heat, "[1, H/stride, W/stride]".into())),
            };
            for o in [&scale, &offset] {
                if o.shape != [2, h as i64, w as i64] {
                    return Err(shape_err(o, format!("[2, {h}, {w}]")));
                }
            }
            let s = *stride as f32;
            let (iw, ih) = (in_w as f32, in_h as f32);
            let plane = h * w;
            let mut out = Vec::new();
            for (i, &score) in heat.data.iter().enumerate().take(plane) {
                if score <= score_threshold {
                    continue;
                }
                let (y, x) = ((i / w) as f32, (i % w) as f32);
                let bh = scale.data[i].exp() * s;
                let bw = scale.data[plane + i].exp() * s;
                let (oy, ox) = (offset.data[i], offset.data[plane + i]);
                let x1 = ((x + ox + 0.5) * s - bw / 2.0).max(0.0);
                let y1 = ((y + oy + 0.5) * s - bh / 2.0).max(0.0);
                out.push(Candidate {
                    bbox: [x1, y1, (x1 + bw).min(iw), (y1 + bh).min(ih)],
                    score,
                    class: 0,
                });
            }
            Ok(out)
        }
    }
}

/// One NanoDet level: `dims` = (feature width, classes, bins), `geo` = (stride, centre offset),
/// `to_input` = the factors from the level's branch input to the model input (1 without one),
/// `mirror` = the branch input's width when the branch saw it mirrored.
#[allow(clippy::too_many_arguments)]
fn nanodet_level(
    scores: &[f32],
    boxes: &[f32],
    (fw, classes, bins): (usize, usize, usize),
    (stride, center): (f32, f32),
    (sx, sy): (f32, f32),
    mirror: Option<f32>,
    score_threshold: f32,
    out: &mut Vec<Candidate>,
) {
    for (cell, row) in scores.chunks_exact(classes).enumerate() {
        let (mut class, mut score) = (0usize, f32::NEG_INFINITY);
        for (c, &v) in row.iter().enumerate() {
            if v > score {
                (class, score) = (c, v);
            }
        }
        if score <= score_threshold {
            continue;
        }
        let cx = ((cell % fw) as f32 + center) * stride;
        let cy = ((cell / fw) as f32 + center) * stride;
        let reg = &boxes[cell * 4 * bins..(cell + 1) * 4 * bins];
        let mut dist = [0.0f32; 4];
        for (side, d) in dist.iter_mut().enumerate() {
            *d = expectation(&reg[side * bins..(side + 1) * bins]) * stride;
        }
        let (x1, x2) = match mirror {
            Some(w) => (w - (cx + dist[2]), w - (cx - dist[0])),
            None => (cx - dist[0], cx + dist[2]),
        };
        out.push(Candidate {
            bbox: [x1 * sx, (cy - dist[1]) * sy, x2 * sx, (cy + dist[3]) * sy],
            score,
            class,
        });
    }
}

/// Expected bin index under the softmax of `logits`.
fn expectation(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut sum, mut acc) = (0.0f32, 0.0f32);
    for (i, &l) in logits.iter().enumerate() {
        let e = (l - max).exp();
        sum += e;
        acc += e * i as f32;
    }
    if sum > 0.0 { acc / sum } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    /// A NanoDet level's two outputs, `s` (scores) and `b` (box bins).
    fn level_outputs<'a>(
        (scores, s_shape): (&'a [f32], &'a [i64]),
        (boxes, b_shape): (&'a [f32], &'a [i64]),
    ) -> [RowOutput<'a>; 2] {
        [
            RowOutput {
                name: "s",
                shape: s_shape,
                data: scores,
            },
            RowOutput {
                name: "b",
                shape: b_shape,
                data: boxes,
            },
        ]
    }

    #[test]
    fn nanodet_decodes_a_peaked_distribution() {
        // 16x16 input, stride 8: 2x2 cells, 2 classes, reg_max 2 (3 bins).
        let mut scores = vec![0.0f32; 4 * 2];
        scores[3 * 2 + 1] = 0.9; // cell 3 = (x 1, y 1), class 1
        let mut boxes = vec![-10.0f32; 4 * 12];
        for side in 0..4 {
            boxes[3 * 12 + side * 3 + 1] = 10.0; // one stride on every side
        }
        let head = Decode::Nanodet {
            reg_max: 2,
            center_offset: 0.5,
            levels: vec![Level {
                stride: 8,
                scores: "s".into(),
                boxes: "b".into(),
                input_size: None,
                mirrored: false,
            }],
        };
        let outs = level_outputs((&scores, &[4, 2]), (&boxes, &[4, 12]));
        let c = decode(&head, &outs, 16, 16, 0.5).expect("decodes");
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].class, c[0].score), (1, 0.9));
        for (got, want) in c[0].bbox.iter().zip([4.0, 4.0, 20.0, 20.0]) {
            assert!((got - want).abs() < 1e-3, "{:?}", c[0].bbox);
        }
        let short = [outs[0]];
        assert_eq!(
            decode(&head, &short, 16, 16, 0.5),
            Err(DecodeError::Missing("b".into()))
        );
        assert!(matches!(
            decode(&head, &outs, 32, 16, 0.5),
            Err(DecodeError::Shape { .. })
        ));
    }

    #[test]
    fn a_resized_branch_maps_its_boxes_back_to_the_model_input() {
        // Model input 32x16; the level's branch sees it resized to 16x8 (stride 8: 2x1 cells).
        let mut scores = vec![0.0f32; 2];
        scores[1] = 0.7; // cell (x 1, y 0), one class
        let mut boxes = vec![-10.0f32; 2 * 8];
        for side in 0..4 {
            boxes[8 + side * 2 + 1] = 10.0; // one stride on every side
        }
        let level = |input_size| Level {
            stride: 8,
            scores: "s".into(),
            boxes: "b".into(),
            input_size,
            mirrored: false,
        };
        let head = |input_size| Decode::Nanodet {
            reg_max: 1,
            center_offset: 0.0,
            levels: vec![level(input_size)],
        };
        let outs = |shape: &'static [i64; 2], bshape: &'static [i64; 2]| {
            level_outputs((&scores, shape), (&boxes, bshape))
        };
        let c =
            decode(&head(Some([16, 8])), &outs(&[2, 1], &[2, 8]), 32, 16, 0.5).expect("decodes");
        // Branch pixels: centre (8, 0), one stride each side -> (0, -8, 16, 8); x2 to the input.
        assert_eq!(c.len(), 1);
        for (got, want) in c[0].bbox.iter().zip([0.0, -16.0, 32.0, 16.0]) {
            assert!((got - want).abs() < 1e-3, "{:?}", c[0].bbox);
        }
        // Without the branch size the grid is the model input's (4x2 cells): a shape error.
        assert!(matches!(
            decode(&head(None), &outs(&[2, 1], &[2, 8]), 32, 16, 0.5),
            Err(DecodeError::Shape { .. })
        ));
        let spec: Level =
            serde_json::from_str(r#"{"stride":8,"scores":"s","boxes":"b","input_size":[16,8]}"#)
                .expect("parses");
        assert_eq!(spec, level(Some([16, 8])));
    }

    #[test]
    fn a_mirrored_branch_mirrors_its_boxes_back() {
        // Model input 32x8; the branch sees it resized to 16x8 and mirrored (stride 8: 2x1
        // cells). Cell (x 1, y 0): one stride to the left, none to the right, one up and down.
        let scores = [0.0f32, 0.8];
        let mut boxes = vec![-10.0f32; 2 * 8];
        for (side, bin) in [(0, 1), (1, 1), (2, 0), (3, 1)] {
            boxes[8 + side * 2 + bin] = 10.0;
        }
        let head = |mirrored| Decode::Nanodet {
            reg_max: 1,
            center_offset: 0.0,
            levels: vec![Level {
                stride: 8,
                scores: "s".into(),
                boxes: "b".into(),
                input_size: Some([16, 8]),
                mirrored,
            }],
        };
        let outs = level_outputs((&scores, &[2, 1]), (&boxes, &[2, 8]));
        // Branch pixels (0, -8, 8, 8); mirrored in the branch's 16 px: (8, -8, 16, 8); x2.
        for (mirrored, want) in [
            (false, [0.0, -8.0, 16.0, 8.0]),
            (true, [16.0, -8.0, 32.0, 8.0]),
        ] {
            let c = decode(&head(mirrored), &outs, 32, 8, 0.5).expect("decodes");
            assert_eq!(c.len(), 1);
            for (got, w) in c[0].bbox.iter().zip(want) {
                assert!(
                    (got - w).abs() < 1e-3,
                    "mirrored {mirrored}: {:?}",
                    c[0].bbox
                );
            }
        }
        let spec: Level = serde_json::from_str(
            r#"{"stride":8,"scores":"s","boxes":"b","input_size":[16,8],"mirrored":true}"#,
        )
        .expect("parses");
        assert!(spec.mirrored);
        let plain = serde_json::to_string(&Level {
            mirrored: false,
            ..spec
        })
        .expect("json");
        assert!(!plain.contains("mirrored"), "{plain}");
    }

    #[test]
    fn centerface_decodes_a_peak() {
        let head = Decode::Centerface {
            stride: 4,
            heatmap: "h".into(),
            scale: "s".into(),
            offset: "o".into(),
        };
        let mut heat = vec![0.0f32; 4];
        heat[1] = 0.8; // (x 1, y 0)
        let scale = vec![(2.0f32).ln(); 8]; // 8x8 px boxes
        let offset = vec![0.0f32; 8];
        let outs = [
            RowOutput {
                name: "h",
                shape: &[1, 2, 2],
                data: &heat,
            },
            RowOutput {
                name: "s",
                shape: &[2, 2, 2],
                data: &scale,
            },
            RowOutput {
                name: "o",
                shape: &[2, 2, 2],
                data: &offset,
            },
        ];
        let c = decode(&head, &outs, 8, 8, 0.5).expect("decodes");
        assert_eq!(c.len(), 1);
        // centre (6, 2), 8x8: x1 = 2, y1 = max(0, -2) = 0, clipped to the 8x8 input.
        for (got, want) in c[0].bbox.iter().zip([2.0, 0.0, 8.0, 8.0]) {
            assert!((got - want).abs() < 1e-4, "{:?}", c[0].bbox);
        }
    }
}
