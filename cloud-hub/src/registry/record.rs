//! Recording a packed bundle's self-test answers with the Tandem engine itself: the pipeline
//! devices run (its image decoders and resizing, its tokenizer), on the configured execution
//! providers. Scores from another pipeline (Python's, in `testdata/expected.json`) can differ by
//! several hundredths on JPEG inputs; recorded here, the tolerance only has to cover the
//! device's numerics.

use super::store::RegistryError;
use bytes::Bytes;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use tandem_engine::Input;
use tandem_engine::bundle as folder;
use tandem_engine::settings::EngineSettings;
use tandem_shared::bundle::{self, BUNDLE_FILE};

fn engine_err(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Engine(e.to_string())
}

/// Runs every self-test of the packed bundle in `out` through the engine (`settings`: runtime,
/// providers, limits; the model folder is set here) and writes the answers as the expected
/// ones. Returns how many were recorded.
pub fn record_expectations(out: &Path, settings: &EngineSettings) -> Result<usize, RegistryError> {
    let path = out.join(BUNDLE_FILE);
    let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io {
        path: path.clone(),
        source,
    })?;
    let mut doc: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let typed = bundle::parse(&bytes)?;
    let name = typed.manifest.name.clone();
    // The engine opens `<models dir>/<name>/`: a link to the bundle in a scratch folder beside
    // it (absolute: the settings resolve relative paths against their config's folder).
    let out = &std::fs::canonicalize(out).map_err(|source| RegistryError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let scratch = out.with_file_name(format!(
        ".record-{}-{}",
        std::process::id(),
        out.file_name().and_then(|n| n.to_str()).unwrap_or("bundle")
    ));
    let models = scratch.join("models");
    std::fs::create_dir_all(&models).map_err(|source| RegistryError::Io {
        path: models.clone(),
        source,
    })?;
    let recorded = (|| -> Result<usize, RegistryError> {
        link(out, &models.join(&name))?;
        let mut s = settings.clone();
        s.models.dir = models.clone();
        s.models.enabled = vec![name.clone()];
        s.engine.max_batch = 1;
        let mut n = 0;
        let mut roles: Vec<_> = typed.selftests.iter().map(|t| t.variant).collect();
        roles.dedup();
        for role in roles {
            s.models.variant = role.as_str().to_string();
            let (_, engine) =
                tandem_engine::engine::start(&s, Arc::default()).map_err(engine_err)?;
            for (i, t) in typed
                .selftests
                .iter()
                .enumerate()
                .filter(|(_, t)| t.variant == role)
            {
                let input = match (&t.input, &t.text) {
                    (Some(f), _) => {
                        let p = out.join(f);
                        let b = std::fs::read(&p)
                            .map_err(|source| RegistryError::Io { path: p, source })?;
                        Input::Images(vec![Bytes::from(b)])
                    }
                    (None, Some(text)) => Input::Texts(vec![text.clone()]),
                    (None, None) => continue,
                };
                let answer = engine.infer_blocking(&name, input).map_err(engine_err)?;
                let p = answer
                    .predictions
                    .first()
                    .ok_or_else(|| engine_err("the engine gave no prediction"))?;
                if p.index != t.top1_index {
                    tracing::warn!(model = %name, selftest = i, engine = p.index, testdata = t.top1_index, "the engine's top-1 differs from testdata; recording the engine's");
                }
                doc["selftests"][i]["top1"] = json!(p.label);
                doc["selftests"][i]["top1_index"] = json!(p.index);
                doc["selftests"][i]["score"] = json!(f64::from(p.score));
                n += 1;
            }
            engine.shutdown();
        }
        Ok(n)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let n = recorded?;
    folder::write_synced(&path, &bundle::canonical_json(&doc))?;
    Ok(n)
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) -> Result<(), RegistryError> {
    std::os::unix::fs::symlink(target, at).map_err(|source| RegistryError::Io {
        path: at.to_path_buf(),
        source,
    })
}

#[cfg(not(unix))]
fn link(_target: &Path, at: &Path) -> Result<(), RegistryError> {
    Err(RegistryError::Io {
        path: at.to_path_buf(),
        source: std::io::Error::other("recording self-tests needs symbolic links"),
    })
}
