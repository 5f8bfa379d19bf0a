//! Engine settings: the `[runtime]`, `[engine]`, `[models]` and `[image]` sections a daemon's
//! TOML config embeds (agent and hub alike), their defaults and their validation.

use crate::provider::options::EpOptions;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tandem_shared::manifest::VariantRole;
use tandem_shared::provider::ExecutionProvider;

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// ONNX Runtime library path; empty means search.
    pub onnxruntime_lib: String,
    /// Execution providers in order of preference (the first that loads the model and
    /// reproduces its reference outputs serves), or `["auto"]`: the fastest accurate one,
    /// measured per model (default `["cpu"]`).
    pub execution_providers: Vec<String>,
    /// Plugin EP libraries to register (OpenVINO, QNN, WebGPU, TensorRT-RTX). Empty (the
    /// default): those `scripts/provision-ep.sh` put in `ep/*/` beside the ONNX Runtime
    /// library, registered only when `execution_providers` asks for a plugin EP or `auto`.
    pub ep_plugins: Vec<String>,
    /// Options of each execution provider (`[runtime.ep.openvino]`, `.cuda`, `.tensorrt`,
    /// `.qnn`, `.webgpu`).
    pub ep: EpOptions,
    /// Largest |output - reference output| a provider may give on the model's reference cases
    /// (`testdata/reference.json`) and still serve it (default 0.01; OpenVINO at bf16 drifts by
    /// ~0.09 on vision-fashion's cloud model). A variant's manifest may raise it for itself
    /// (`ep_max_abs_diff`, e.g. an INT8 model), up to `accuracy_max_abs_diff_cap`.
    pub accuracy_max_abs_diff: f64,
    /// Most a manifest's `ep_max_abs_diff` may raise the tolerance to (default 1.0); set it to
    /// `accuracy_max_abs_diff` to hold every model to that.
    pub accuracy_max_abs_diff_cap: f64,
    /// File where `execution_providers = ["auto"]` keeps its measurements (bounded, keyed by
    /// model digest, provider, options and hardware), so a restart does not measure again;
    /// relative to the config's directory. Empty (the default): kept in memory only.
    pub ep_choice_cache: String,
    /// After a session moved to the next provider because its own failed at run time, the
    /// first wait before the better provider is tried again, in milliseconds (then doubling,
    /// with jitter, up to 32 times this; default 30000).
    pub ep_retry_after_ms: u64,
    /// Intra-op threads per session.
    pub intra_op_threads: usize,
    /// Whether ONNX Runtime's intra-op threads spin while waiting for work (lower latency for
    /// one request at a time, but CPU burnt that other sessions and batches could use).
    pub intra_op_spinning: bool,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Worker threads (sessions) per model.
    pub workers: usize,
    /// Waiting requests per model.
    pub queue_capacity: usize,
    /// Top-k list length.
    pub top_k: usize,
    /// Microseconds a worker polls for the next request before sleeping.
    pub spin_us: u64,
    /// Most requests a worker runs as one batch (1 = no batching).
    pub max_batch: usize,
    /// Longest a worker waits for more requests to fill a batch, in microseconds.
    pub max_batch_delay_us: u64,
    /// Most rows (images, texts, or the first dimension of tensors) one request may carry;
    /// above it the request is refused (HTTP 413), before anything is decoded. Stated in the
    /// OIP model metadata as `parameters.max_batch_size`.
    pub max_rows_per_request: usize,
    /// Most rows a worker decodes and runs at once: a request (or a batch of requests) with
    /// more runs in chunks of this many, so a worker's memory is bounded by the chunk, not by
    /// the request.
    pub max_rows_per_run: usize,
}

/// `[models]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder of model folders.
    pub dir: PathBuf,
    /// Models to load; empty = all.
    pub enabled: Vec<String>,
    /// Variant to run.
    pub variant: String,
    /// Verify file hashes before loading.
    pub verify_sha256: bool,
    /// Agent: the hub's model-signing public key (`signing.pub` from `tandem-hub init`, SPKI
    /// PEM). A bundle is installed only when its signature verifies against it; empty: every
    /// bundle is refused. The hub ignores it.
    pub trusted_key: String,
    /// Agent: disk budget of the installed versions of all models, in bytes (versions beyond
    /// the active and previous ones are removed oldest first to make room).
    pub store_max_bytes: u64,
    /// Agent: installed versions kept per model, the active and the previous one included
    /// (at least 2: the previous one is the rollback).
    pub keep_versions: usize,
    /// Agent: the slowest self-test answer (p99 over the runs) a new version may give on this
    /// device's execution provider before it is refused, in milliseconds.
    pub selftest_max_p99_ms: u64,
    /// Agent: how many times each self-test input runs for the latency check.
    pub selftest_runs: usize,
    /// Agent: how long a newly swapped-in version is watched, in seconds; it is rolled back
    /// on its own when it does worse by a margin below than the version it replaced did in the
    /// same length of time before the swap (not after a rollback the hub ordered).
    pub watch_window_s: u64,
    /// Agent: answers the new version must give in the window before it is judged (fewer:
    /// kept, nothing to judge on).
    pub watch_min_requests: u64,
    /// Agent: roll back when the new version's runtime-error share exceeds the old one's by
    /// more than this (0..1).
    pub watch_max_error_increase: f64,
    /// Agent: roll back when the new version's p99 latency exceeds the old one's times this
    /// (and by more than 2 ms).
    pub watch_max_p99_ratio: f64,
    /// Agent: roll back when the share of answers below the model's confidence threshold
    /// (what the cascade offloads) grows by more than this (0..1).
    pub watch_max_offload_increase: f64,
    /// Agent: roll back when the mean top-1 probability drops by more than this (0..1).
    pub watch_max_confidence_drop: f64,
}

/// `[image]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Max width, pixels.
    pub max_width: u32,
    /// Max height, pixels.
    pub max_height: u32,
    /// Max decoder allocation, bytes.
    pub max_alloc_bytes: u64,
    /// Where resize/normalise run: `auto` (default: measured per model input at start-up),
    /// `cpu`, or `gpu` (wgpu on Vulkan; needs the `gpu` build feature, else the CPU).
    pub preprocess_device: PreprocessDevice,
}

/// `[image] preprocess_device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreprocessDevice {
    /// Measure both at start-up and keep the faster (the CPU, without opening Vulkan, when
    /// the kernel exposes no GPU device node: /dev/dri/renderD*, /dev/nvidia*).
    #[default]
    Auto,
    /// Always the CPU path.
    Cpu,
    /// The GPU path whenever a Vulkan adapter opens (the CPU path otherwise).
    Gpu,
}

impl RuntimeConfig {
    /// The accuracy gate's tolerance for a variant whose manifest states `manifest`
    /// (`ep_max_abs_diff`): at least `accuracy_max_abs_diff`, raised to the manifest's value
    /// but not beyond `accuracy_max_abs_diff_cap`; and the setting it comes from (for the
    /// skip reason).
    pub fn accuracy_tolerance(&self, manifest: Option<f64>) -> (f64, &'static str) {
        let base = (self.accuracy_max_abs_diff, "runtime.accuracy_max_abs_diff");
        match manifest {
            Some(t) if t > self.accuracy_max_abs_diff_cap => {
                let cap = (
                    self.accuracy_max_abs_diff_cap,
                    "runtime.accuracy_max_abs_diff_cap",
                );
                if cap.0 > base.0 { cap } else { base }
            }
            Some(t) if t > base.0 => (t, "the manifest's ep_max_abs_diff"),
            _ => base,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            onnxruntime_lib: String::new(),
            execution_providers: vec!["cpu".into()],
            ep_plugins: Vec::new(),
            ep: EpOptions::default(),
            accuracy_max_abs_diff: 0.01,
            accuracy_max_abs_diff_cap: 1.0,
            ep_choice_cache: String::new(),
            ep_retry_after_ms: 30_000,
            intra_op_threads: 1,
            intra_op_spinning: true,
        }
    }
}
impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            queue_capacity: 64,
            top_k: 5,
            spin_us: 100,
            max_batch: 1,
            max_batch_delay_us: 0,
            max_rows_per_request: 64,
            max_rows_per_run: 16,
        }
    }
}
impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("models"),
            enabled: Vec::new(),
            variant: "edge".into(),
            verify_sha256: true,
            trusted_key: String::new(),
            store_max_bytes: 1 << 30,
            keep_versions: 3,
            selftest_max_p99_ms: 1000,
            selftest_runs: 5,
            watch_window_s: 300,
            watch_min_requests: 100,
            watch_max_error_increase: 0.01,
            watch_max_p99_ratio: 1.5,
            watch_max_offload_increase: 0.10,
            watch_max_confidence_drop: 0.10,
        }
    }
}
impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            max_width: 8192,
            max_height: 8192,
            max_alloc_bytes: 256 * 1024 * 1024,
            preprocess_device: PreprocessDevice::Auto,
        }
    }
}

/// A path from a config file, resolved against the file's directory (absolute paths as they
/// are).
pub fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Everything the engine needs, with the directory relative paths resolve against.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineSettings {
    /// ONNX Runtime.
    pub runtime: RuntimeConfig,
    /// Workers and queues.
    pub engine: EngineConfig,
    /// Model store.
    pub models: ModelsConfig,
    /// Image decoding limits.
    pub image: ImageConfig,
    /// Directory relative paths are resolved against.
    pub base_dir: PathBuf,
}

impl EngineSettings {
    /// A path from the config, resolved against the config's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(&self.base_dir, p)
    }

    /// `runtime.ep_choice_cache`, resolved (`None` when empty).
    pub fn ep_choice_cache(&self) -> Option<PathBuf> {
        let p = &self.runtime.ep_choice_cache;
        (!p.is_empty()).then(|| self.resolve(Path::new(p)))
    }

    /// Execution providers (validated); `auto`: every candidate, in [`AUTO_ORDER`].
    ///
    /// [`AUTO_ORDER`]: crate::provider::AUTO_ORDER
    pub fn providers(&self) -> Vec<ExecutionProvider> {
        if self.auto_providers() {
            return crate::provider::AUTO_ORDER.to_vec();
        }
        self.runtime
            .execution_providers
            .iter()
            .filter_map(|e| e.parse().ok())
            .collect()
    }

    /// `execution_providers = ["auto"]`: the provider is chosen by measurement.
    pub fn auto_providers(&self) -> bool {
        self.runtime.execution_providers == ["auto"]
    }

    /// The variant to run (validated).
    pub fn variant(&self) -> VariantRole {
        self.models.variant.parse().unwrap_or(VariantRole::Edge)
    }

    /// Every problem with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.runtime.execution_providers.is_empty() {
            p.push("runtime.execution_providers is empty (use [\"cpu\"])".into());
        }
        for ep in &self.runtime.execution_providers {
            if ep == "auto" {
                if self.runtime.execution_providers.len() > 1 {
                    p.push("runtime.execution_providers: `auto` stands alone".into());
                }
            } else if let Err(e) = ep.parse::<ExecutionProvider>() {
                p.push(format!("runtime.execution_providers: {e}"));
            }
        }
        p.extend(self.runtime.ep.problems());
        if !(self.runtime.accuracy_max_abs_diff.is_finite()
            && self.runtime.accuracy_max_abs_diff > 0.0)
        {
            p.push("runtime.accuracy_max_abs_diff must be a number > 0".into());
        }
        if !(self.runtime.accuracy_max_abs_diff_cap.is_finite()
            && self.runtime.accuracy_max_abs_diff_cap > 0.0)
        {
            p.push("runtime.accuracy_max_abs_diff_cap must be a number > 0".into());
        }
        if !(1..=3_600_000).contains(&self.runtime.ep_retry_after_ms) {
            p.push("runtime.ep_retry_after_ms must be between 1 and 3600000".into());
        }
        for (i, lib) in self.runtime.ep_plugins.iter().enumerate() {
            if lib.is_empty() {
                p.push(format!("runtime.ep_plugins[{i}] is empty"));
            }
        }
        if !(1..=256).contains(&self.runtime.intra_op_threads) {
            p.push("runtime.intra_op_threads must be between 1 and 256".into());
        }
        if !(1..=64).contains(&self.engine.workers) {
            p.push("engine.workers must be between 1 and 64".into());
        }
        if !(1..=65_536).contains(&self.engine.queue_capacity) {
            p.push("engine.queue_capacity must be between 1 and 65536".into());
        }
        if self.engine.top_k == 0 {
            p.push("engine.top_k must be > 0".into());
        }
        if !(1..=1024).contains(&self.engine.max_batch) {
            p.push("engine.max_batch must be between 1 and 1024".into());
        }
        if self.engine.max_batch_delay_us > 1_000_000 {
            p.push("engine.max_batch_delay_us must be at most 1000000".into());
        }
        if !(1..=65_536).contains(&self.engine.max_rows_per_request) {
            p.push("engine.max_rows_per_request must be between 1 and 65536".into());
        }
        if !(1..=1024).contains(&self.engine.max_rows_per_run) {
            p.push("engine.max_rows_per_run must be between 1 and 1024".into());
        }
        if self.engine.spin_us > 10_000 {
            p.push("engine.spin_us must be at most 10000".into());
        }
        if let Err(e) = self.models.variant.parse::<VariantRole>() {
            p.push(format!("models.variant: {e}"));
        }
        if self.models.keep_versions < 2 {
            p.push(
                "models.keep_versions must be at least 2 (the active and the previous version)"
                    .into(),
            );
        }
        if self.models.store_max_bytes < 1 << 20 {
            p.push("models.store_max_bytes must be at least 1048576".into());
        }
        if self.models.selftest_max_p99_ms == 0 {
            p.push("models.selftest_max_p99_ms must be > 0".into());
        }
        if !(1..=1000).contains(&self.models.selftest_runs) {
            p.push("models.selftest_runs must be between 1 and 1000".into());
        }
        for (key, v) in [
            (
                "watch_max_error_increase",
                self.models.watch_max_error_increase,
            ),
            (
                "watch_max_offload_increase",
                self.models.watch_max_offload_increase,
            ),
            (
                "watch_max_confidence_drop",
                self.models.watch_max_confidence_drop,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("models.{key} must be between 0 and 1"));
            }
        }
        if self.models.watch_max_p99_ratio.is_nan() || self.models.watch_max_p99_ratio < 1.0 {
            p.push("models.watch_max_p99_ratio must be at least 1".into());
        }
        if self.image.max_width == 0 || self.image.max_height == 0 {
            p.push("image.max_width and image.max_height must be > 0".into());
        }
        if self.image.max_alloc_bytes < 1024 * 1024 {
            p.push("image.max_alloc_bytes must be at least 1048576".into());
        }
        p
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
