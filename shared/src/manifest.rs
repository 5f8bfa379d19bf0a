//! The model manifest: what a model folder holds and how to feed it (docs/manifest.md).
//!
//! Parsing and validation only; reading files and checking hashes is the caller's job.

use crate::detect::DetectionSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest format version this code reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A logical model: one name, one version, an edge and/or a cloud variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version; must equal [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// Model name, as clients address it (`vision-fashion`).
    pub name: String,
    /// Model version (semver-like, compared as dotted numbers).
    pub version: String,
    /// What the model does; decides pre- and post-processing.
    pub task: Task,
    /// Free text for people.
    #[serde(default)]
    pub description: String,
    /// Labels file (one label per line, line index = class index).
    pub labels: String,
    /// The variants by role.
    pub variants: BTreeMap<VariantRole, Variant>,
    /// sha256 (lowercase hex) of every file the model needs, by relative path.
    pub files: BTreeMap<String, String>,
}

/// The kind of problem a model solves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// One label per image.
    ImageClassification,
    /// One label per text.
    TextClassification,
    /// Boxes, classes and scores per image (`variants.<v>.detection` says how to decode).
    Detection,
}

/// Where a variant is meant to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariantRole {
    /// Small, quantized, on the device.
    Edge,
    /// Large, full precision, on the hub.
    Cloud,
}

impl VariantRole {
    /// `edge` or `cloud`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Cloud => "cloud",
        }
    }
}

impl std::str::FromStr for VariantRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "edge" => Ok(Self::Edge),
            "cloud" => Ok(Self::Cloud),
            other => Err(format!(
                "unknown variant `{other}` (expected edge or cloud)"
            )),
        }
    }
}

/// One ONNX file of a model and how to feed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// The ONNX file.
    pub file: String,
    /// True when the file may be absent (large variants built by `make models`).
    #[serde(default)]
    pub optional: bool,
    /// How the weights are stored (`int8-static-qdq-per-channel`, `none`, ...).
    #[serde(default)]
    pub quantization: String,
    /// Parameter count, when known.
    #[serde(default)]
    pub params: Option<u64>,
    /// Suggested confidence threshold for the routing signal.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Which signal the threshold applies to.
    #[serde(default)]
    pub threshold_signal: Option<Signal>,
    /// Model inputs.
    pub inputs: Vec<TensorSpec>,
    /// Model outputs; the first is the classification output.
    pub outputs: Vec<OutputSpec>,
    /// How raw inputs become tensors.
    pub preprocess: Preprocess,
    /// Measured accuracy, when recorded.
    #[serde(default)]
    pub accuracy: Option<Accuracy>,
    /// The largest |output - reference output| an execution provider may give on this
    /// variant's reference cases and still serve it, when this variant needs more than the
    /// runtime's `accuracy_max_abs_diff` (an INT8 model whose quantized arithmetic another
    /// provider rounds differently); measured and justified when the model is built
    /// (docs/manifest.md). It only raises the runtime's value, up to
    /// `runtime.accuracy_max_abs_diff_cap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ep_max_abs_diff: Option<f64>,
    /// For task `detection`: how the outputs become boxes.
    #[serde(default)]
    pub detection: Option<DetectionSpec>,
}

/// A routing signal computed from the output probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The highest probability.
    MaxProb,
    /// Highest minus second-highest probability.
    Margin,
    /// Shannon entropy of the distribution (lower is surer).
    Entropy,
}

/// Element types the engine feeds and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    Float32,
    /// 64-bit signed integer.
    Int64,
}

impl DType {
    /// The OIP v2 datatype name.
    pub fn oip_name(self) -> &'static str {
        match self {
            Self::Float32 => "FP32",
            Self::Int64 => "INT64",
        }
    }
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        8 - 4 * usize::from(self == Self::Float32)
    }
}

/// A named tensor with a shape; `-1` marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape; `-1` is dynamic.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Whether a concrete shape fits this spec.
    pub fn accepts_shape(&self, shape: &[i64]) -> bool {
        shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(want, got)| *got >= 0 && (*want < 0 || want == got))
    }
}

/// What an output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores: the engine applies softmax.
    Logits,
    /// Already a probability distribution.
    Probabilities,
    /// Read by the task's decoder (`detection`), not as class scores.
    Raw,
}

/// An output tensor and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape; `-1` is dynamic.
    pub shape: Vec<i64>,
    /// Logits or probabilities.
    pub kind: OutputKind,
}

/// Pre-processing, per input modality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Preprocess {
    /// Decode, resize, normalise an image.
    Image(ImagePreprocess),
    /// Tokenise a text.
    Text(TextPreprocess),
}

/// Image pre-processing: `value = (pixel * scale - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePreprocess {
    /// Tensor layout.
    pub layout: Layout,
    /// Channels.
    pub color: Color,
    /// Target width in pixels.
    pub width: u32,
    /// Target height in pixels.
    pub height: u32,
    /// How to reach width x height.
    pub resize: Resize,
    /// For [`Resize::ShorterSideCenterCrop`]: the shorter side before cropping.
    #[serde(default)]
    pub shorter_side: Option<u32>,
    /// Multiplier applied to the 0..255 pixel first.
    pub scale: f32,
    /// Per-channel mean (one value per channel, or one for all).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
    /// For [`Resize::Letterbox`]: the pixel value (0..255, before `scale`/`mean`/`std`) of the
    /// border around the fitted image. Default 0.
    #[serde(default)]
    pub pad_value: u8,
}

impl ImagePreprocess {
    /// The same pre-processing with the colour read as RGB: for [`Color::Bgr`], RGB with
    /// `mean` and `std` reversed, whose tensor with its channels reversed is the BGR one.
    pub fn rgb_equivalent(&self) -> Self {
        let mut p = self.clone();
        if p.color == Color::Bgr {
            p.color = Color::Rgb;
            p.mean.reverse();
            p.std.reverse();
        }
        p
    }
}

/// Tensor layout of an image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Batch, channels, height, width.
    NCHW,
    /// Batch, height, width, channels.
    NHWC,
}

/// Colour channels of an image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// One luminance channel.
    Gray,
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (models trained on OpenCV frames).
    Bgr,
}

impl Color {
    /// Number of channels.
    pub fn channels(self) -> usize {
        match self {
            Self::Gray => 1,
            Self::Rgb | Self::Bgr => 3,
        }
    }
}

/// Resize policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Straight to width x height (bilinear), aspect ratio not kept.
    Stretch,
    /// Shorter side to `shorter_side`, then the centre width x height.
    ShorterSideCenterCrop,
    /// Scaled to fit inside width x height with the aspect ratio kept, centred, the border
    /// filled with `pad_value` (detection models).
    Letterbox,
}

/// Text pre-processing through a Hugging Face `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextPreprocess {
    /// The tokenizer file.
    pub tokenizer: String,
    /// Truncate to this many tokens (special tokens included).
    pub max_tokens: usize,
    /// Name of the token-id input.
    pub input_ids: String,
    /// Name of the attention-mask input.
    pub attention_mask: String,
    /// Name of the token-type input, when the model has one.
    #[serde(default)]
    pub token_type_ids: Option<String>,
}

/// A measured accuracy figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// What it was measured on (path or name).
    pub dataset: String,
    /// How many samples.
    pub samples: u64,
    /// Top-1 accuracy in 0..1.
    pub top1: f64,
}

/// Why a manifest is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON or not the expected shape.
    #[error("manifest is not valid: {0}")]
    Parse(#[from] serde_json::Error),
    /// A format version this code does not read.
    #[error("manifest_version {found} is not supported (expected {MANIFEST_VERSION})")]
    Version {
        /// The version found.
        found: u32,
    },
    /// Semantic problems, all of them.
    #[error("manifest has {} problem(s): {}", .0.len(), .0.join("; "))]
    Invalid(Vec<String>),
}

impl Manifest {
    /// Parses and validates a manifest.
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_str(text)?;
        if m.manifest_version != MANIFEST_VERSION {
            return Err(ManifestError::Version {
                found: m.manifest_version,
            });
        }
        let problems = m.problems();
        if problems.is_empty() {
            Ok(m)
        } else {
            Err(ManifestError::Invalid(problems))
        }
    }

    /// Every semantic problem, for a report that lists them all.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            p.push(format!(
                "name `{}` must be lowercase letters, digits and `-`",
                self.name
            ));
        }
        if self.variants.is_empty() {
            p.push("no variants".into());
        }
        if !self.files.contains_key(&self.labels) {
            p.push(format!(
                "labels file `{}` has no sha256 in `files`",
                self.labels
            ));
        }
        for (role, v) in &self.variants {
            let r = role.as_str();
            if !self.files.contains_key(&v.file) {
                p.push(format!(
                    "variants.{r}.file `{}` has no sha256 in `files`",
                    v.file
                ));
            }
            if v.outputs.is_empty() {
                p.push(format!("variants.{r}.outputs is empty"));
            }
            if v.ep_max_abs_diff
                .is_some_and(|t| !(t.is_finite() && t > 0.0))
            {
                p.push(format!("variants.{r}.ep_max_abs_diff must be a number > 0"));
            }
            p.extend(detection_problems(r, v, self.task));
            match (&v.preprocess, self.task) {
                (Preprocess::Image(img), Task::ImageClassification | Task::Detection) => {
                    let c = img.color.channels();
                    for (key, vals) in [("mean", &img.mean), ("std", &img.std)] {
                        if vals.len() != 1 && vals.len() != c {
                            p.push(format!(
                                "variants.{r}.preprocess.{key} has {} values for {c} channel(s)",
                                vals.len()
                            ));
                        }
                    }
                    if img.std.contains(&0.0) {
                        p.push(format!("variants.{r}.preprocess.std has a zero"));
                    }
                    if img.width == 0 || img.height == 0 {
                        p.push(format!("variants.{r}.preprocess width/height must be > 0"));
                    }
                    if img.resize == Resize::ShorterSideCenterCrop
                        && img.shorter_side.unwrap_or(0) < img.width.min(img.height)
                    {
                        p.push(format!(
                            "variants.{r}.preprocess.shorter_side must be >= the crop size"
                        ));
                    }
                    if v.inputs.len() != 1 {
                        p.push(format!(
                            "variants.{r}: an image model takes exactly one input"
                        ));
                    }
                }
                (Preprocess::Text(t), Task::TextClassification) => {
                    if !self.files.contains_key(&t.tokenizer) {
                        p.push(format!(
                            "variants.{r}.preprocess.tokenizer `{}` has no sha256 in `files`",
                            t.tokenizer
                        ));
                    }
                    for name in [
                        Some(&t.input_ids),
                        Some(&t.attention_mask),
                        t.token_type_ids.as_ref(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if !v.inputs.iter().any(|i| &i.name == name) {
                            p.push(format!(
                                "variants.{r}: input `{name}` is not among the inputs"
                            ));
                        }
                    }
                    if t.max_tokens == 0 {
                        p.push(format!("variants.{r}.preprocess.max_tokens must be > 0"));
                    }
                }
                _ => p.push(format!(
                    "variants.{r}.preprocess does not fit task {:?}",
                    self.task
                )),
            }
        }
        for (path, sha) in &self.files {
            if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                p.push(format!(
                    "files.`{path}`: `{sha}` is not a sha256 hex digest"
                ));
            }
            if path.starts_with('/') || path.split('/').any(|c| c == "..") {
                p.push(format!(
                    "files.`{path}` must be a relative path inside the model folder"
                ));
            }
        }
        p
    }
}

/// The `detection` block: present exactly for task `detection`, its outputs declared.
fn detection_problems(r: &str, v: &Variant, task: Task) -> Vec<String> {
    let mut p = Vec::new();
    match (&v.detection, task) {
        (None, Task::Detection) => p.push(format!("variants.{r}.detection is missing")),
        (Some(_), Task::ImageClassification | Task::TextClassification) => {
            p.push(format!("variants.{r}.detection is only for task detection"))
        }
        (Some(d), Task::Detection) => {
            for name in d.decode.output_names() {
                if !v.outputs.iter().any(|o| o.name == name) {
                    p.push(format!(
                        "variants.{r}.detection reads output `{name}`, not among the outputs"
                    ));
                }
            }
            if !(0.0..=1.0).contains(&d.score_threshold) || !(0.0..=1.0).contains(&d.iou_threshold)
            {
                p.push(format!(
                    "variants.{r}.detection thresholds must be within 0..1"
                ));
            }
            if d.max_detections == 0 {
                p.push(format!("variants.{r}.detection.max_detections must be > 0"));
            }
            if d.blur_threshold
                .is_some_and(|b| !(0.0..=d.score_threshold).contains(&b))
            {
                p.push(format!(
                    "variants.{r}.detection.blur_threshold must be within 0..score_threshold"
                ));
            }
        }
        (None, _) => {}
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn sample() -> String {
        format!(
            r#"{{"manifest_version":1,"name":"vision-fashion","version":"1.0.0","task":"image-classification",
            "labels":"labels.txt","variants":{{"edge":{{"file":"edge.onnx","quantization":"int8",
            "threshold":0.7,"threshold_signal":"max_prob",
            "inputs":[{{"name":"input","dtype":"float32","shape":[-1,1,28,28]}}],
            "outputs":[{{"name":"logits","dtype":"float32","shape":[-1,10],"kind":"logits"}}],
            "preprocess":{{"type":"image","layout":"NCHW","color":"gray","width":28,"height":28,
            "resize":"stretch","scale":0.0039215686,"mean":[0.286],"std":[0.353]}}}}}},
            "files":{{"edge.onnx":"{SHA}","labels.txt":"{SHA}"}}}}"#
        )
    }

    #[test]
    fn parses_a_valid_manifest() {
        let m = Manifest::from_json(&sample()).expect("valid");
        assert_eq!(m.name, "vision-fashion");
        let edge = &m.variants[&VariantRole::Edge];
        assert!(edge.inputs[0].accepts_shape(&[4, 1, 28, 28]));
        assert!(!edge.inputs[0].accepts_shape(&[4, 3, 28, 28]));
        assert!(!edge.inputs[0].accepts_shape(&[1, 28, 28]));
    }

    #[test]
    fn lists_every_problem() {
        let bad = sample()
            .replace("\"std\":[0.353]", "\"std\":[0.0, 1.0]")
            .replace(
                &format!("\"labels.txt\":\"{SHA}\""),
                "\"labels.txt\":\"zz\"",
            );
        match Manifest::from_json(&bad) {
            Err(ManifestError::Invalid(p)) => {
                assert!(p.iter().any(|s| s.contains("std has 2 values")), "{p:?}");
                assert!(p.iter().any(|s| s.contains("std has a zero")), "{p:?}");
                assert!(p.iter().any(|s| s.contains("not a sha256")), "{p:?}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_variant_may_state_its_own_provider_tolerance_if_it_is_positive() {
        let with = |t: &str| {
            sample().replace(
                "\"threshold\":0.7,",
                &format!("\"threshold\":0.7,\"ep_max_abs_diff\":{t},"),
            )
        };
        let m = Manifest::from_json(&with("0.4")).expect("valid");
        assert_eq!(m.variants[&VariantRole::Edge].ep_max_abs_diff, Some(0.4));
        let none = Manifest::from_json(&sample()).expect("valid");
        assert_eq!(none.variants[&VariantRole::Edge].ep_max_abs_diff, None);
        assert!(
            !serde_json::to_string(&none)
                .expect("json")
                .contains("ep_max_abs_diff")
        );
        for bad in ["0", "-1"] {
            match Manifest::from_json(&with(bad)) {
                Err(ManifestError::Invalid(p)) => assert!(
                    p.iter()
                        .any(|s| s.contains("variants.edge.ep_max_abs_diff must be")),
                    "{p:?}"
                ),
                other => panic!("{bad}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_detection_manifest_needs_its_decode_block() {
        let real = include_str!("../../models/detect-coco/manifest.json");
        let m = Manifest::from_json(real).expect("the shipped detection manifest is valid");
        assert_eq!(m.task, Task::Detection);
        let edge = &m.variants[&VariantRole::Edge];
        assert!(matches!(&edge.preprocess, Preprocess::Image(p) if p.color == Color::Bgr));
        let no_block = real.replace("\"detection\":", "\"unused_detection\":");
        assert!(Manifest::from_json(&no_block).is_err());
        let mut v: serde_json::Value = serde_json::from_str(real).expect("json");
        v["variants"]["edge"]["detection"]["decode"]["levels"][0]["scores"] = "nope".into();
        match Manifest::from_json(&v.to_string()) {
            Err(ManifestError::Invalid(p)) => {
                assert!(p.iter().any(|s| s.contains("reads output `nope`")), "{p:?}")
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn refuses_other_versions() {
        let bad = sample().replace("\"manifest_version\":1", "\"manifest_version\":9");
        assert!(matches!(
            Manifest::from_json(&bad),
            Err(ManifestError::Version { found: 9 })
        ));
    }
}
