//! A detection model in the cascade: the frame policy in force (the edge variant's manifest
//! `detection.cascade` under the config's `[policy.models.NAME]` keys), a frame's signals
//! (boxes in the uncertain band, counted down to the variant's decode floor).

use super::config::ModelPolicyConfig;
use crate::policy::ModelPolicy;
use tandem_engine::Inference;
use tandem_shared::detect::DetectionSignals;
use tandem_shared::detect::cascade::CascadeSpec;
use tandem_shared::manifest::Variant;

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
        .and_then(|d| d.cascade.clone());
    let merged = match config {
        Some(c) => c.boxes(manifest.clone())?,
        None => manifest.clone()?,
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
