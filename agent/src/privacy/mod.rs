//! Face blur on every image that leaves the device: offloaded frames, hard examples, shadow
//! samples, corrections and snapshots each pass through [`Privacy::scrub`] on their way out.
//! Where `privacy.blur_faces` applies to the model (default: detection models), the faces are
//! found on the device with the face detector (`privacy.face_model`, CenterFace INT8) and
//! each box, grown by `privacy.margin`, is pixelated and smoothed ([`blur`]); the image then
//! leaves as a JPEG. An image with no face leaves as it came. The blur takes the boxes the
//! detector answers and those it kept under its `score_threshold` down to its manifest's
//! `detection.blur_threshold`: a recall margin under the threshold a detector checking what
//! leaves would use (docs/manifest.md).
//!
//! Fail closed: when the face detector is missing or fails, or the image cannot be decoded or
//! encoded, the image does not leave; the refusal is counted per path and the caller carries
//! on without it (a local answer, a dropped example, a 503 for a correction).
//!
//! Layout: `config` (`[privacy]`), `blur` (the pixel work, pure), `report` (metrics and
//! telemetry).

pub mod blur;
mod config;
pub mod report;

pub use blur::BlurReport;
pub use config::{ModelPrivacy, PrivacyConfig};

use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tandem_engine::preprocess::image::{Limits, decode};
use tandem_engine::{Engine, InferenceError, Input};
use tandem_shared::manifest::Color;

/// Why an image may not leave the device.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The face detector is not loaded here.
    #[error("face model `{0}` is not loaded on this device (privacy.face_model)")]
    NoFaceModel(String),
    /// The face detector refused or failed on the image.
    #[error("the face detector failed: {0}")]
    Detect(#[from] InferenceError),
    /// The face detector answered without a set of boxes.
    #[error("the face detector `{0}` gave no detections (is it a detection model?)")]
    NoDetections(String),
    /// The image could not be decoded for blurring.
    #[error("the image could not be decoded for the blur: {0}")]
    Decode(String),
    /// The blurred image could not be encoded.
    #[error("the blurred image could not be encoded: {0}")]
    Encode(String),
}

/// Where an image leaves the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// A frame offloaded to the hub (the cascade).
    Offload,
    /// A hard example (offloaded or degraded) for the hub's dataset.
    HardExample,
    /// A shadow sample (a confident answer the hub judges).
    Shadow,
    /// A person's correction, with the input it corrects.
    Correction,
    /// A snapshot of a tracked object.
    Snapshot,
}

impl Leaving {
    /// Every path, in metric order.
    pub const ALL: [Leaving; 5] = [
        Leaving::Offload,
        Leaving::HardExample,
        Leaving::Shadow,
        Leaving::Correction,
        Leaving::Snapshot,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Leaving::Offload => "offload",
            Leaving::HardExample => "hard_example",
            Leaving::Shadow => "shadow",
            Leaving::Correction => "correction",
            Leaving::Snapshot => "snapshot",
        }
    }
}

/// Counters since start (`/metrics` and MQTT telemetry).
#[derive(Debug, Default)]
pub struct PrivacyStats {
    /// Images the face detector checked before they left.
    pub images_checked: AtomicU64,
    /// Of those, images with at least one face blurred.
    pub images_blurred: AtomicU64,
    /// Face boxes blurred.
    pub faces_blurred: AtomicU64,
    /// Images kept on the device because the blur failed, per [`Leaving::ALL`] path.
    pub refused: [AtomicU64; 5],
}

impl PrivacyStats {
    /// Images refused on one path.
    pub fn refused(&self, path: Leaving) -> u64 {
        self.refused[path as usize].load(Relaxed)
    }

    /// Images refused on every path.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|r| r.load(Relaxed)).sum()
    }
}

/// An image as it may leave, and what was blurred in it.
#[derive(Debug, Clone)]
pub struct Blurred {
    /// A JPEG when a face was blurred, else the bytes as they came.
    pub image: Bytes,
    /// What was blurred.
    pub report: BlurReport,
}

/// The face blur for images leaving the device.
#[derive(Debug)]
pub struct Privacy {
    cfg: PrivacyConfig,
    engine: Arc<Engine>,
    limits: Limits,
    remote_detection: BTreeSet<String>,
    stats: PrivacyStats,
}

impl Privacy {
    /// The blur of `cfg`, finding faces with `engine`'s `cfg.face_model` and decoding within
    /// `limits` (`[image]`).
    pub fn new(cfg: PrivacyConfig, engine: Arc<Engine>, limits: Limits) -> Self {
        Self {
            cfg,
            engine,
            limits,
            remote_detection: BTreeSet::new(),
            stats: PrivacyStats::default(),
        }
    }

    /// Names the hub-only models that are detection models (their default is to blur).
    pub fn with_remote_detection(mut self, models: BTreeSet<String>) -> Self {
        self.remote_detection = models;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &PrivacyConfig {
        &self.cfg
    }

    /// Counters since start.
    pub fn stats(&self) -> &PrivacyStats {
        &self.stats
    }

    /// Whether `model`'s images are blurred before they leave.
    pub fn applies(&self, model: &str) -> bool {
        let detection = match self.engine.model(model) {
            Some(h) => h.files.variant.detection.is_some(),
            None => self.remote_detection.contains(model),
        };
        self.cfg.applies(model, detection)
    }

    /// Whether the blur applies to a served image model.
    pub fn active(&self) -> bool {
        let image = |m: &tandem_engine::engine::ModelHandle| {
            matches!(
                m.files.variant.preprocess,
                tandem_shared::manifest::Preprocess::Image(_)
            )
        };
        self.engine
            .models()
            .any(|m| image(m) && self.applies(m.name()))
            || self.remote_detection.iter().any(|m| self.applies(m))
    }

    /// Whether the face detector is loaded.
    pub fn ready(&self) -> bool {
        self.engine.model(&self.cfg.face_model).is_some()
    }

    /// Finds the faces in `image` (JPEG, PNG or raw frame) and blurs them, whatever the
    /// model: a JPEG when a face was found, else `image` itself. Counts nothing.
    pub async fn blur_faces(&self, image: &Bytes) -> Result<Blurred, PrivacyError> {
        let face = &self.cfg.face_model;
        if !self.ready() {
            return Err(PrivacyError::NoFaceModel(face.clone()));
        }
        let inf = self
            .engine
            .infer(face, Input::Images(vec![image.clone()]))
            .await?;
        let found = inf
            .detections
            .first()
            .ok_or_else(|| PrivacyError::NoDetections(face.clone()))?;
        // The answered faces, and those the detector kept under its answer threshold down to
        // the manifest's `blur_threshold` (the privacy margin).
        let floor = self
            .engine
            .model(face)
            .and_then(|h| h.files.variant.detection.as_ref())
            .map_or(f32::INFINITY, |d| d.blur_floor());
        let under = inf.below.first().map_or(&[][..], Vec::as_slice);
        let boxes: Vec<[f32; 4]> = found
            .boxes
            .iter()
            .chain(under.iter().filter(|d| d.score > floor))
            .map(|d| d.bbox)
            .collect();
        if boxes.is_empty() {
            return Ok(Blurred {
                image: image.clone(),
                report: BlurReport::default(),
            });
        }
        let (bytes, limits, margin) = (image.clone(), self.limits, self.cfg.margin);
        let work = move || -> Result<Blurred, PrivacyError> {
            let mut px = decode(&bytes, Color::Rgb, &limits)
                .map_err(|e| PrivacyError::Decode(e.to_string()))?;
            let report = blur::blur_boxes(&mut px, &boxes, margin);
            let jpeg = blur::encode_jpeg(&px).map_err(|e| PrivacyError::Encode(e.to_string()))?;
            Ok(Blurred {
                image: Bytes::from(jpeg),
                report,
            })
        };
        // Decoding and encoding a frame is CPU work: off the async reactor.
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| PrivacyError::Encode(format!("the blur task failed: {e}")))?
    }

    /// The bytes of `model`'s image as they may leave on `path`: blurred where
    /// `privacy.blur_faces` applies to the model, as they came where it does not. An error
    /// means the image must not leave; it is counted as refused.
    pub async fn scrub(
        &self,
        path: Leaving,
        model: &str,
        image: Bytes,
    ) -> Result<Bytes, PrivacyError> {
        if !self.applies(model) {
            return Ok(image);
        }
        match self.blur_faces(&image).await {
            Ok(b) => {
                self.stats.images_checked.fetch_add(1, Relaxed);
                if b.report.faces > 0 {
                    self.stats.images_blurred.fetch_add(1, Relaxed);
                    self.stats
                        .faces_blurred
                        .fetch_add(b.report.faces as u64, Relaxed);
                }
                Ok(b.image)
            }
            Err(e) => {
                self.stats.refused[path as usize].fetch_add(1, Relaxed);
                tracing::warn!(model, path = path.as_str(), error = %e, "image kept on the device: the face blur failed");
                Err(e)
            }
        }
    }
}

/// Whether the face detector must be loaded: a model of `enabled` in `models_dir` that the
/// blur applies to (an empty `enabled` loads every model of the folder already).
pub fn needs_face_model(
    cfg: &PrivacyConfig,
    models_dir: &std::path::Path,
    enabled: &[String],
) -> bool {
    let present = models_dir
        .join(&cfg.face_model)
        .join("manifest.json")
        .is_file();
    if enabled.is_empty() || enabled.contains(&cfg.face_model) || !present {
        return false;
    }
    enabled.iter().any(|name| {
        tandem_engine::model::read_manifest(&models_dir.join(name)).is_ok_and(|m| {
            let detection = m.variants.values().any(|v| v.detection.is_some());
            let image = m
                .variants
                .values()
                .any(|v| matches!(v.preprocess, tandem_shared::manifest::Preprocess::Image(_)));
            image && cfg.applies(name, detection)
        })
    })
}

/// The blur for `cfg`, over the router's engine and hub-only models; warns when a served
/// model needs it and the face detector is not loaded (those images will not leave).
pub fn start(cfg: &crate::config::Config, router: &crate::hybrid::Router) -> Arc<Privacy> {
    let remote = router
        .remote()
        .iter()
        .filter(|(_, r)| r.manifest.variants.values().any(|v| v.detection.is_some()))
        .map(|(name, _)| name.clone())
        .collect();
    let p = Privacy::new(
        cfg.privacy.clone(),
        router.engine().clone(),
        Limits::from(&cfg.image),
    )
    .with_remote_detection(remote);
    let needing: Vec<String> = router
        .engine()
        .models()
        .filter(|m| {
            matches!(
                m.files.variant.preprocess,
                tandem_shared::manifest::Preprocess::Image(_)
            ) && p.applies(m.name())
        })
        .map(|m| m.name().to_string())
        .collect();
    if !needing.is_empty() && !p.ready() {
        tracing::warn!(face_model = %cfg.privacy.face_model, models = %needing.join(", "), "privacy.blur_faces is on but the face model is not loaded: no image of these models will leave the device");
    }
    Arc::new(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_face_model_is_loaded_only_for_a_model_the_blur_applies_to() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let cfg = PrivacyConfig::default();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(needs_face_model(&cfg, &dir, &names(&["detect-coco"])));
        assert!(!needs_face_model(&cfg, &dir, &names(&["vision-imagenet"])));
        assert!(!needs_face_model(
            &cfg,
            &dir,
            &names(&["detect-coco", "detect-face"])
        ));
        assert!(
            !needs_face_model(&cfg, &dir, &[]),
            "an empty list loads every model"
        );
        let on = PrivacyConfig {
            blur_faces: Some(true),
            ..PrivacyConfig::default()
        };
        assert!(needs_face_model(&on, &dir, &names(&["vision-imagenet"])));
        assert!(
            !needs_face_model(&on, &dir, &names(&["text-sentiment"])),
            "text"
        );
        let missing = PrivacyConfig {
            face_model: "no-such-model".into(),
            ..on
        };
        assert!(!needs_face_model(&missing, &dir, &names(&["detect-coco"])));
    }

    #[test]
    fn each_path_counts_apart() {
        let s = PrivacyStats::default();
        for (i, l) in Leaving::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i);
            s.refused[i].fetch_add(i as u64 + 1, Relaxed);
        }
        assert_eq!(s.refused(Leaving::Snapshot), 5);
        assert_eq!(s.refused_total(), 15);
    }
}
