//! `[privacy]` in the agent config: whether faces are blurred in the images that leave the
//! device (offloads, hard examples, shadow samples, corrections, snapshots), per model.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[privacy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Blur faces in every image that leaves the device. Unset (the default): on for detection
    /// models, off for classification models; `true`: on for every image model; `false`: off
    /// for every model. `[privacy.models.NAME]` overrides it per model.
    pub blur_faces: Option<bool>,
    /// The face detector run on the device to find the faces (default `detect-face`, CenterFace
    /// INT8). Loaded with the other models whenever a served model needs the blur; without it
    /// every image that should be blurred is refused (fail closed).
    pub face_model: String,
    /// Added on each side of a face box before it is blurred, as a share of the box's width
    /// and height (default 0.25; 0.0-1.0): hair, ears and chin go too.
    pub margin: f32,
    /// Per model: `[privacy.models.vision-imagenet] blur_faces = true`.
    pub models: BTreeMap<String, ModelPrivacy>,
}

/// `[privacy.models.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrivacy {
    /// Blur faces in this model's images that leave the device (overrides
    /// `privacy.blur_faces`).
    pub blur_faces: bool,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            blur_faces: None,
            face_model: "detect-face".into(),
            margin: 0.25,
            models: BTreeMap::new(),
        }
    }
}

impl PrivacyConfig {
    /// Whether `model`'s images are blurred before they leave (`detection`: it is a detection
    /// model).
    pub fn applies(&self, model: &str, detection: bool) -> bool {
        match self.models.get(model) {
            Some(m) => m.blur_faces,
            None => self.blur_faces.unwrap_or(detection),
        }
    }

    /// Every problem with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(0.0..=1.0).contains(&self.margin) {
            p.push("privacy.margin must be between 0.0 and 1.0".into());
        }
        if self.face_model.is_empty() {
            p.push("privacy.face_model must name the face detector (default detect-face)".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_models_by_default_and_overrides_win() {
        let mut c = PrivacyConfig::default();
        assert!(c.applies("detect-coco", true));
        assert!(!c.applies("vision-imagenet", false));
        c.blur_faces = Some(true);
        assert!(c.applies("vision-imagenet", false));
        c.blur_faces = Some(false);
        assert!(!c.applies("detect-coco", true));
        c.models
            .insert("detect-coco".into(), ModelPrivacy { blur_faces: true });
        assert!(c.applies("detect-coco", true));
        let parsed: PrivacyConfig =
            toml::from_str("[models.vision-imagenet]\nblur_faces = true\n").expect("toml");
        assert!(parsed.applies("vision-imagenet", false));
        assert!(toml::from_str::<PrivacyConfig>("blur = true").is_err());
        c.margin = 2.0;
        assert_eq!(c.problems().len(), 1);
    }
}
