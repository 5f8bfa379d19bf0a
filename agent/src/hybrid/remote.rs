//! Models this device cannot run: their manifest is here (it names the hub's cloud variant,
//! its output and the labels) but the local variant is not, so every request goes to the hub
//! (`reason: no_local_variant`). Found at start among the enabled (or discovered) models.

use std::collections::BTreeMap;
use std::path::Path;
use tandem_engine::model;
use tandem_shared::manifest::{Manifest, VariantRole};

/// A model answered only by the hub.
#[derive(Debug, Clone)]
pub struct RemoteModel {
    /// Its manifest (the cloud variant's outputs say how to read the hub's answer).
    pub manifest: Manifest,
    /// Class labels.
    pub labels: Vec<String>,
}

/// Whether `dir/name` has a manifest without a `local` variant but with a cloud one.
pub fn remote_only(models_dir: &Path, name: &str, local: VariantRole) -> bool {
    model::read_manifest(&models_dir.join(name)).is_ok_and(|m| {
        !m.variants.contains_key(&local) && m.variants.contains_key(&VariantRole::Cloud)
    })
}

/// The remote-only models among `names` (every model folder when `names` is empty).
pub fn discover(
    models_dir: &Path,
    names: &[String],
    local: VariantRole,
) -> BTreeMap<String, RemoteModel> {
    let names = if names.is_empty() {
        model::discover(models_dir).unwrap_or_default()
    } else {
        names.to_vec()
    };
    let mut out = BTreeMap::new();
    for name in names {
        if !remote_only(models_dir, &name, local) {
            continue;
        }
        let dir = models_dir.join(&name);
        let loaded = model::read_manifest(&dir)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                let labels = std::fs::read_to_string(dir.join(&m.labels))
                    .map_err(|e| format!("{}: {e}", dir.join(&m.labels).display()))?;
                Ok(RemoteModel {
                    labels: labels.lines().map(str::to_string).collect(),
                    manifest: m,
                })
            });
        match loaded {
            Ok(r) => {
                tracing::info!(model = %name, version = %r.manifest.version, "no local variant: every request goes to the hub");
                out.insert(name, r);
            }
            Err(e) => tracing::warn!(model = %name, error = %e, "remote model skipped"),
        }
    }
    out
}
