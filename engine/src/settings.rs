//! Engine settings: the `[runtime]`, `[engine]`, `[models]` and `[image]` sections a daemon's
//! TOML config embeds (agent and hub alike), their defaults and their validation.

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
    /// Execution providers in order of preference.
    pub execution_providers: Vec<String>,
    /// Intra-op threads per session.
    pub intra_op_threads: usize,
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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            onnxruntime_lib: String::new(),
            execution_providers: vec!["cpu".into()],
            intra_op_threads: 1,
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
        }
    }
}
impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            max_width: 8192,
            max_height: 8192,
            max_alloc_bytes: 256 * 1024 * 1024,
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

    /// Execution providers (validated).
    pub fn providers(&self) -> Vec<ExecutionProvider> {
        self.runtime
            .execution_providers
            .iter()
            .filter_map(|e| e.parse().ok())
            .collect()
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
            if let Err(e) = ep.parse::<ExecutionProvider>() {
                p.push(format!("runtime.execution_providers: {e}"));
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
        if self.engine.spin_us > 10_000 {
            p.push("engine.spin_us must be at most 10000".into());
        }
        if let Err(e) = self.models.variant.parse::<VariantRole>() {
            p.push(format!("models.variant: {e}"));
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
