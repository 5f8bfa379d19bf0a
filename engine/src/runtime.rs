//! Finding and loading the ONNX Runtime shared library (`load-dynamic`), once per process.

use crate::settings::EngineSettings;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The library file name `make setup` installs.
pub const LIB_NAME: &str = "libonnxruntime.so.1.31.1";

/// Where the Debian packages install it (`tandem-onnxruntime`, `make deb`).
pub const PACKAGED_DIR: &str = "/usr/lib/tandem";

/// Why ONNX Runtime is not usable.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No candidate file exists.
    #[error(
        "ONNX Runtime library not found (looked at: {}); run `make setup` or set runtime.onnxruntime_lib",
        .looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// Every path tried.
        looked: Vec<PathBuf>,
    },
    /// The file exists but cannot be used (not a library, too old, ...).
    #[error(
        "ONNX Runtime library {path} cannot be used: {message} (ONNX Runtime >= 1.31 is required; run `make setup`)"
    )]
    Load {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        message: String,
    },
    /// Creating the ONNX Runtime environment failed.
    #[error("ONNX Runtime environment failed to start: {0}")]
    Environment(String),
}

/// Candidate library paths in search order.
pub fn candidates(cfg: &EngineSettings) -> Vec<PathBuf> {
    if !cfg.runtime.onnxruntime_lib.is_empty() {
        return vec![cfg.resolve(Path::new(&cfg.runtime.onnxruntime_lib))];
    }
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(LIB_NAME));
        out.push(dir.join("libonnxruntime.so"));
        // Installed by the packages: <prefix>/bin/tandem-agent -> <prefix>/lib/tandem/
        if let Some(prefix) = dir.parent() {
            out.push(prefix.join("lib/tandem").join(LIB_NAME));
        }
        // Inside a checkout: target/<profile>/tandem-agent -> <repo>/.ort/
        for up in dir.ancestors().skip(1).take(3) {
            out.push(up.join(".ort").join(LIB_NAME));
        }
    }
    out.push(PathBuf::from(PACKAGED_DIR).join(LIB_NAME));
    out.push(PathBuf::from(".ort").join(LIB_NAME));
    out
}

/// For the crate's unit tests: settings rooted at the checkout (its `models/` and `.ort/`)
/// and the ONNX Runtime environment `make setup` provisioned there.
#[cfg(test)]
pub(crate) fn for_tests() -> (EngineSettings, ort::environment::Environment) {
    let s = EngineSettings {
        base_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        ..Default::default()
    };
    let (_, env) = init(&s).expect("ONNX Runtime loads (run `make setup`)");
    (s, env)
}

static LOADED: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();

/// Loads the library named by the config (or found by search) and returns the environment.
/// Idempotent within a process: later calls return the first environment.
pub fn init(
    cfg: &EngineSettings,
) -> Result<(&'static Path, ort::environment::Environment), RuntimeError> {
    if let Some((p, env)) = LOADED.get() {
        return Ok((p.as_path(), env.clone()));
    }
    let looked = candidates(cfg);
    let path = looked
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| RuntimeError::NotFound {
            looked: looked.clone(),
        })?;
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::Load {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("tandem")
        .build()
        .map_err(|e| RuntimeError::Environment(e.to_string()))?;
    let (p, env) = LOADED.get_or_init(|| (path, env));
    Ok((p.as_path(), env.clone()))
}

/// The library [`init`] loaded, once it has (plugin libraries are looked for beside it).
pub fn loaded_path() -> Option<&'static Path> {
    LOADED.get().map(|(p, _)| p.as_path())
}
