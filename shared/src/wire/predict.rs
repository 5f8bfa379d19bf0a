//! Byte layouts of the typed answer a `PredictResponse` carries ([`Prediction`]: the top-k of
//! a classification, the boxes of a detection) and of the input both request kinds carry
//! (docs/wire.md, "Field encodings"). Scores and coordinates must be finite, indices fit in
//! `u32`, and at most [`MAX_PREDICTIONS`] classes or boxes travel, checked on both sides.

use super::buf::{Reader, Writer};
use super::message::Input;
use super::{MAX_NAME_BYTES, WireError};
use crate::answer::{ClassScore, ClassSignals, Classification, MAX_PREDICTIONS, Prediction};
use crate::detect::{Detection, Detections};

const INPUT_IMAGE: u8 = 1;
const INPUT_TEXT: u8 = 2;
const INPUT_TENSORS: u8 = 3;

const PREDICTION_TOP_K: u8 = 1;
const PREDICTION_BOXES: u8 = 2;

/// Bytes a class entry takes at least (`index u32`, empty `label str16`, `score f32`).
const MIN_CLASS_BYTES: usize = 10;
/// Bytes a box entry takes at least (4 coordinates, score, class, empty label).
const MIN_BOX_BYTES: usize = 26;

pub(super) fn write_input(w: &mut Writer<'_>, input: &Input) -> Result<(), WireError> {
    match input {
        Input::ImageBytes(b) => {
            w.u8(INPUT_IMAGE);
            w.bytes32(b)
        }
        Input::Text(t) => {
            w.u8(INPUT_TEXT);
            w.bytes32(t.as_bytes())
        }
        Input::Tensors(ts) => {
            w.u8(INPUT_TENSORS);
            super::codec::write_tensors(w, ts)
        }
    }
}

pub(super) fn read_input(r: &mut Reader<'_>) -> Result<Input, WireError> {
    Ok(match r.u8("input")? {
        INPUT_IMAGE => Input::ImageBytes(r.bytes32("input.image")?),
        INPUT_TEXT => Input::Text(r.str32("input.text")?),
        INPUT_TENSORS => Input::Tensors(super::codec::read_tensors(r)?),
        got => {
            return Err(WireError::InvalidTag {
                field: "input",
                got,
            });
        }
    })
}

/// The request's `top_k`, checked: `1..=MAX_PREDICTIONS`.
pub(super) fn check_top_k(k: u16) -> Result<u16, WireError> {
    if k == 0 || usize::from(k) > MAX_PREDICTIONS {
        return Err(WireError::InvalidValue {
            field: "top_k",
            reason: "must be between 1 and 4096",
        });
    }
    Ok(k)
}

pub(super) fn write_flag(w: &mut Writer<'_>, v: bool) {
    w.u8(u8::from(v));
}

pub(super) fn read_flag(r: &mut Reader<'_>, field: &'static str) -> Result<bool, WireError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        got => Err(WireError::InvalidTag { field, got }),
    }
}

fn finite(field: &'static str, v: f32) -> Result<f32, WireError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(WireError::InvalidValue {
            field,
            reason: "not a finite number",
        })
    }
}

fn write_f32(w: &mut Writer<'_>, field: &'static str, v: f32) -> Result<(), WireError> {
    w.u32(finite(field, v)?.to_bits());
    Ok(())
}

fn read_f32(r: &mut Reader<'_>, field: &'static str) -> Result<f32, WireError> {
    finite(field, f32::from_bits(r.u32(field)?))
}

fn write_index(w: &mut Writer<'_>, field: &'static str, v: usize) -> Result<(), WireError> {
    let v = u32::try_from(v).map_err(|_| WireError::InvalidValue {
        field,
        reason: "over u32",
    })?;
    w.u32(v);
    Ok(())
}

fn count(field: &'static str, n: usize) -> Result<u16, WireError> {
    if n > MAX_PREDICTIONS {
        return Err(WireError::InvalidValue {
            field,
            reason: "more than 4096 entries",
        });
    }
    Ok(n as u16) // MAX_PREDICTIONS < u16::MAX, checked above
}

fn read_count(
    r: &mut Reader<'_>,
    field: &'static str,
    min_bytes: usize,
) -> Result<(usize, usize), WireError> {
    let n = usize::from(r.u16(field)?);
    count(field, n)?;
    // No more room is reserved than the payload can hold.
    Ok((n, n.min(r.remaining() / min_bytes)))
}

pub(super) fn write_prediction(w: &mut Writer<'_>, p: &Prediction) -> Result<(), WireError> {
    match p {
        Prediction::TopK(c) => {
            w.u8(PREDICTION_TOP_K);
            write_f32(w, "signals.max_prob", c.signals.max_prob)?;
            write_f32(w, "signals.margin", c.signals.margin)?;
            write_f32(w, "signals.entropy", c.signals.entropy)?;
            if c.top_k.is_empty() {
                return Err(WireError::InvalidValue {
                    field: "top_k",
                    reason: "a classification names at least one class",
                });
            }
            w.u16(count("top_k", c.top_k.len())?);
            for s in &c.top_k {
                write_index(w, "class.index", s.index)?;
                w.str16("class.label", &s.label, MAX_NAME_BYTES)?;
                write_f32(w, "class.score", s.score)?;
            }
        }
        Prediction::Boxes(d) => {
            w.u8(PREDICTION_BOXES);
            w.u32(d.width);
            w.u32(d.height);
            w.u16(count("boxes", d.boxes.len())?);
            for b in &d.boxes {
                for v in b.bbox {
                    write_f32(w, "box.bbox", v)?;
                }
                write_f32(w, "box.score", b.score)?;
                write_index(w, "box.class", b.class)?;
                w.str16("box.label", &b.label, MAX_NAME_BYTES)?;
            }
        }
    }
    Ok(())
}

pub(super) fn read_prediction(r: &mut Reader<'_>) -> Result<Prediction, WireError> {
    match r.u8("prediction")? {
        PREDICTION_TOP_K => {
            let signals = ClassSignals {
                max_prob: read_f32(r, "signals.max_prob")?,
                margin: read_f32(r, "signals.margin")?,
                entropy: read_f32(r, "signals.entropy")?,
            };
            let (n, room) = read_count(r, "top_k", MIN_CLASS_BYTES)?;
            if n == 0 {
                return Err(WireError::InvalidValue {
                    field: "top_k",
                    reason: "a classification names at least one class",
                });
            }
            let mut top_k = Vec::with_capacity(room);
            for _ in 0..n {
                top_k.push(ClassScore {
                    index: r.u32("class.index")? as usize,
                    label: r.str16("class.label", MAX_NAME_BYTES)?,
                    score: read_f32(r, "class.score")?,
                });
            }
            Ok(Prediction::TopK(Classification::from_top_k(top_k, signals)))
        }
        PREDICTION_BOXES => {
            let (width, height) = (r.u32("width")?, r.u32("height")?);
            let (n, room) = read_count(r, "boxes", MIN_BOX_BYTES)?;
            let mut boxes = Vec::with_capacity(room);
            for _ in 0..n {
                let mut bbox = [0.0; 4];
                for v in &mut bbox {
                    *v = read_f32(r, "box.bbox")?;
                }
                boxes.push(Detection {
                    bbox,
                    score: read_f32(r, "box.score")?,
                    class: r.u32("box.class")? as usize,
                    label: r.str16("box.label", MAX_NAME_BYTES)?,
                });
            }
            Ok(Prediction::Boxes(Detections {
                width,
                height,
                boxes,
            }))
        }
        got => Err(WireError::InvalidTag {
            field: "prediction",
            got,
        }),
    }
}
