//! Pre-processing on a worker: a request's images or texts to the model's input tensors, and
//! the checks prepared tensors must pass before a run.

use super::worker::{Ctx, Prep};
use super::{InferenceError, Input};
use crate::detect;
use crate::preprocess::geometry::Plan;
use crate::preprocess::image as img;
use std::sync::Arc;
use tandem_shared::manifest::{Color, DType, Preprocess};
use tandem_shared::oip::{InputTensor, TensorData};

/// The model's input tensors, and for a detection model fed images, where each image landed
/// (to map its boxes back).
pub(super) type Prepared = (Arc<Vec<InputTensor>>, Option<Vec<Plan>>);

pub(super) fn prepare(ctx: &Ctx, input: Input) -> Result<Prepared, InferenceError> {
    let name = &ctx.model;
    match (input, &ctx.prep) {
        (Input::Images(images), Prep::Image(p, limits, backend)) => {
            let refs: Vec<&[u8]> = images.iter().map(|b| b.as_ref()).collect();
            let (shape, mut data, plans) = img::prepare_batch_with(&refs, p, limits, backend)?;
            if matches!(&ctx.files.variant.preprocess, Preprocess::Image(q) if q.color == Color::Bgr)
            {
                detect::rgb_to_bgr(&mut data, p);
            }
            let places = ctx.files.variant.detection.is_some().then_some(plans);
            let input_name = ctx
                .files
                .variant
                .inputs
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default();
            Ok((
                Arc::new(vec![InputTensor {
                    name: input_name,
                    shape,
                    data: TensorData::F32(data),
                }]),
                places,
            ))
        }
        (Input::Texts(texts), Prep::Text(enc)) => {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok((
                Arc::new(
                    enc.encode_batch(&refs)?
                        .into_iter()
                        .map(|(name, shape, data)| InputTensor {
                            name,
                            shape,
                            data: TensorData::I64(data),
                        })
                        .collect(),
                ),
                None,
            ))
        }
        (Input::Tensors(t), _) => {
            check_tensors(ctx, &t)?;
            Ok((t, None))
        }
        (Input::Images(_), Prep::Text(_)) => Err(InferenceError::BadInput(format!(
            "model `{name}` classifies text, not images"
        ))),
        (Input::Texts(_), Prep::Image(..)) => Err(InferenceError::BadInput(format!(
            "model `{name}` classifies images, not text"
        ))),
    }
}

fn check_tensors(ctx: &Ctx, tensors: &[InputTensor]) -> Result<(), InferenceError> {
    let specs = &ctx.files.variant.inputs;
    for t in tensors {
        let Some(spec) = specs.iter().find(|s| s.name == t.name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(InferenceError::BadInput(format!(
                "model `{}` has no input `{}` (inputs: {})",
                ctx.model,
                t.name,
                known.join(", ")
            )));
        };
        let ok_type = matches!(
            (&t.data, spec.dtype),
            (TensorData::F32(_), DType::Float32) | (TensorData::I64(_), DType::Int64)
        );
        if !ok_type {
            return Err(InferenceError::BadInput(format!(
                "input `{}` must be {}, got {}",
                t.name,
                spec.dtype.oip_name(),
                t.data.datatype()
            )));
        }
        if !spec.accepts_shape(&t.shape) {
            return Err(InferenceError::BadInput(format!(
                "input `{}` has shape {:?}; the model takes {:?} (-1 = any)",
                t.name, t.shape, spec.shape
            )));
        }
    }
    for spec in specs {
        if !tensors.iter().any(|t| t.name == spec.name) {
            return Err(InferenceError::BadInput(format!(
                "input `{}` is missing",
                spec.name
            )));
        }
    }
    let batch: Vec<i64> = tensors
        .iter()
        .filter_map(|t| t.shape.first().copied())
        .collect();
    if batch.windows(2).any(|w| w[0] != w[1]) {
        return Err(InferenceError::BadInput(format!(
            "inputs disagree on the batch size: {batch:?}"
        )));
    }
    Ok(())
}
