//! At start-up, before the engine opens anything: every installed version a `current` pointer
//! names is verified again against the trusted key (signature, every file's sha256). One that
//! fails — altered on disk, or the key changed — is set aside (`current` → `current.rejected`)
//! and the shipped files serve instead, so no model loads unverified.

use super::manager::load_trusted_key;
use super::store::Store;
use std::path::Path;
use tandem_engine::bundle::read_folder;
use tandem_engine::model::CURRENT_FILE;
use tandem_engine::settings::EngineSettings;
use tandem_shared::bundle::{self, Expect};

/// What the check found for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Model name.
    pub model: String,
    /// The installed version `current` names.
    pub version: String,
    /// `None`: verified; else why it was set aside.
    pub refused: Option<String>,
}

/// Verifies the installed version of every model that has one (see the module doc).
pub fn check_installed(settings: &EngineSettings) -> Vec<Checked> {
    let dir = settings.resolve(&settings.models.dir);
    let m = &settings.models;
    let store = Store::new(&dir, m.store_max_bytes, m.keep_versions);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let key = load_trusted_key(settings);
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let Some(model) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some(version) = store.current(&model) else {
            continue;
        };
        let refused = match &key {
            Ok(Some(k)) => {
                let expect = Expect {
                    role: settings.variant(),
                    model: Some(&model),
                    active: None,
                    allow_older: true,
                };
                match read_folder(&store.version_dir(&model, &version)) {
                    Ok(read) => bundle::verify(read.input(), k, &expect)
                        .err()
                        .map(|e| e.to_string()),
                    Err(e) => Some(e.to_string()),
                }
            }
            Ok(None) => Some("models.trusted_key is not set".into()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = &refused {
            set_aside(&dir.join(&model));
            tracing::error!(model = %model, version = %version, error = %why, "installed model version fails verification: set aside, the shipped version serves");
        }
        out.push(Checked {
            model,
            version,
            refused,
        });
    }
    out
}

fn set_aside(model_dir: &Path) {
    let from = model_dir.join(CURRENT_FILE);
    let to = model_dir.join(format!("{CURRENT_FILE}.rejected"));
    if let Err(e) = std::fs::rename(&from, &to) {
        tracing::error!(path = %from.display(), error = %e, "cannot set the pointer aside");
    }
}
