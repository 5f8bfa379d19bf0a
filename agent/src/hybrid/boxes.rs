//! A detection model in the cascade: the frame policy in force (the edge variant's manifest
//! `detection.cascade` under the config's `[policy.models.NAME]` keys), a frame's signals
//! (boxes in the uncertain band, counted down to the variant's decode floor), and the hub's
//! boxes read from the `detections` tensor it answers with.

use super::config::ModelPolicyConfig;
use crate::policy::ModelPolicy;
use tandem_engine::Inference;
use tandem_shared::convert;
use tandem_shared::detect::cascade::CascadeSpec;
use tandem_shared::detect::{DETECTION_FIELDS, DETECTIONS_OUTPUT, DetectionSignals, Detections};
use tandem_shared::manifest::Variant;
use tandem_shared::oip::TensorData;
use tandem_shared::wire;

/// The frame policy of `model`: the manifest's, overridden key by key by the config. A merged
/// policy that is not valid (a config band against the manifest's other end) is dropped for
/// the manifest's, with a warning.
pub fn frame_policy(
    model: &str,
    config: Option<&ModelPolicyConfig>,
    variant: Option<&Variant>,
) -> Option<CascadeSpec> {
    let manifest = variant
        .and_then(|v| v.detection.as_ref())
        .and_then(|d| d.cascade);
    let merged = match config {
        Some(c) => c.boxes(manifest)?,
        None => manifest?,
    };
    match merged.validate() {
        Ok(()) => Some(merged),
        Err(e) => {
            tracing::warn!(model, error = %e, "policy.models: detection band not valid with the manifest's; the manifest's is in force");
            manifest
        }
    }
}

/// The signals of the first frame of a detection model's local answer (`None` for
/// classification).
pub fn frame_signals(policy: &ModelPolicy, inf: &Inference) -> Option<DetectionSignals> {
    let d = inf.detections.first()?;
    let below = inf.below.first().map_or(&[][..], Vec::as_slice);
    Some(match &policy.boxes {
        Some(c) => c.signals(&d.boxes, below),
        None => d.signals(),
    })
}

/// The boxes of the hub's `detections` tensor (`[1, slots, 6]`, image pixels), labelled with
/// `labels`; the image's width and height are left 0 (the wire does not carry them).
pub fn cloud_boxes(outputs: &[wire::Tensor], labels: &[String]) -> Option<Detections> {
    let t = outputs.iter().find(|t| t.name == DETECTIONS_OUTPUT)?;
    let TensorData::F32(data) = convert::tensor_data(t) else {
        return None;
    };
    if t.shape.last() != Some(&(DETECTION_FIELDS as i64)) || data.len() % DETECTION_FIELDS != 0 {
        return None;
    }
    let slots = t.shape.get(1).copied().unwrap_or(0).max(0) as usize;
    let row = data.get(..slots * DETECTION_FIELDS)?;
    Some(Detections::from_row(row, labels, 0, 0))
}
