//! Plugin execution-provider libraries (`RegisterExecutionProviderLibrary`): where they are,
//! registering each once per process, and the devices ONNX Runtime then discovers.
//!
//! A library is registered at most once per process (by path); a failure is remembered and
//! reported to every config that names it. Registration changes what a session built with the
//! default device policy runs on, so every session is pinned to its devices
//! ([`super::session`]).

use ort::environment::Environment;
use ort::memory::DeviceType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tandem_shared::provider::Accelerator;

/// Where plugin folders live under the ONNX Runtime library's folder (`make setup`).
pub const PLUGIN_SUBDIR: &str = "ep";

/// A plugin library and whether it registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// Short name from the file (`openvino`, `qnn`, `webgpu`, `nv_tensorrt_rtx`).
    pub name: String,
    /// The library file.
    pub path: PathBuf,
    /// `Err(reason)` when it could not be registered.
    pub status: Result<(), String>,
}

static REGISTERED: Mutex<BTreeMap<PathBuf, Result<(), String>>> = Mutex::new(BTreeMap::new());

/// The short name of a plugin library file: `libonnxruntime_providers_openvino_plugin.so` ->
/// `openvino`.
pub fn name_of(path: &Path) -> String {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let stem = file.split(".so").next().unwrap_or(file);
    let stem = stem
        .strip_prefix("libonnxruntime_providers_")
        .or_else(|| stem.strip_prefix("lib"))
        .unwrap_or(stem);
    stem.strip_suffix("_plugin").unwrap_or(stem).to_string()
}

/// Plugin libraries provisioned beside the ONNX Runtime library (`<dir>/ep/*/`), then those
/// in the packaged folder (`/usr/lib/tandem/ep/*/`, the `tandem-ep-<name>` packages) that
/// name no plugin already found; sorted within each folder.
pub fn discover(ort_lib: &Path) -> Vec<PathBuf> {
    let packaged = Path::new(crate::runtime::PACKAGED_DIR).join(PLUGIN_SUBDIR);
    let beside = ort_lib.parent().map(|d| d.join(PLUGIN_SUBDIR));
    discover_in(beside.iter().chain([&packaged]))
}

/// The plugin libraries in `<root>/*/` for each root, the first of each name kept.
fn discover_in<'a>(roots: impl IntoIterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for root in roots {
        let mut found = Vec::new();
        for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().to_string();
                if name.starts_with("libonnxruntime_providers_")
                    && name.ends_with(".so")
                    && !name.contains("_shared")
                {
                    found.push(f.path());
                }
            }
        }
        found.sort();
        out.extend(found.into_iter().filter(|p| seen.insert(name_of(p))));
    }
    out
}

/// Registers each library (once per process) and says how each went.
pub fn register(env: &Environment, paths: &[PathBuf]) -> Vec<Plugin> {
    let mut done = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
    paths
        .iter()
        .map(|given| {
            let name = name_of(given);
            // One key per file, however the path is spelt.
            let path = &std::fs::canonicalize(given).unwrap_or_else(|_| given.clone());
            // ONNX Runtime wants one registration name per library: a second file of the same
            // plugin (another copy, a broken one) gets the name and a suffix.
            let taken = done.keys().any(|p| p != path && name_of(p) == name);
            let reg_name = if taken {
                format!("{name}.{:08x}", done.len())
            } else {
                name.clone()
            };
            let status = done
                .entry(path.clone())
                .or_insert_with(|| {
                    let r = if !path.is_file() {
                        Err(format!(
                            "plugin library {} not found (scripts/provision-ep.sh provisions it; or set runtime.ep_plugins)",
                            given.display()
                        ))
                    } else {
                        env.register_ep_library(reg_name, path)
                            .map_err(|e| format!("plugin library {} cannot be loaded: {e}", path.display()))
                    };
                    match &r {
                        Ok(()) => tracing::info!(plugin = %name, path = %path.display(), "execution-provider plugin registered"),
                        Err(e) => tracing::warn!(plugin = %name, error = %e, "execution-provider plugin not registered"),
                    }
                    r
                })
                .clone();
            Plugin {
                name,
                path: path.clone(),
                status,
            }
        })
        .collect()
}

/// The devices ONNX Runtime discovers (with the registered plugins).
pub fn inventory(env: &Environment) -> Vec<Accelerator> {
    env.devices()
        .map(|d| {
            let hw = d.hardware_device();
            Accelerator {
                ep: d.ep().unwrap_or_default().to_string(),
                ep_vendor: d.ep_vendor().unwrap_or_default().to_string(),
                kind: kind_name(hw.ty()).into(),
                vendor: hw.vendor().unwrap_or_default().to_string(),
                device_id: hw.id(),
            }
        })
        .collect()
}

/// Whether the OpenVINO plugin can offer this machine's CPU to ONNX Runtime: its factory lists
/// the CPU device only when the CPU is Intel's (`vendor_id` in `/proc/cpuinfo`), so on another
/// vendor's CPU (AMD's, say) OpenVINO is passed over with "offers no cpu device on this
/// machine" and the next provider in the list serves. Tests whose subject is OpenVINO serving
/// ask this first.
pub fn openvino_offers_this_cpu() -> bool {
    cpu_vendor().is_some_and(|v| v == "GenuineIntel")
}

/// The CPU vendor `/proc/cpuinfo` names (`GenuineIntel`, `AuthenticAMD`), if it names one.
pub fn cpu_vendor() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("vendor_id"))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_string())
}

/// `cpu`, `gpu` or `npu`.
pub fn kind_name(t: DeviceType) -> &'static str {
    match t {
        DeviceType::CPU => "cpu",
        DeviceType::GPU => "gpu",
        DeviceType::NPU => "npu",
        DeviceType::FPGA => "fpga",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_file() {
        for (file, name) in [
            ("/x/libonnxruntime_providers_openvino_plugin.so", "openvino"),
            ("libonnxruntime_providers_qnn.so", "qnn"),
            (
                "libonnxruntime_providers_nv_tensorrt_rtx.so.1",
                "nv_tensorrt_rtx",
            ),
            ("libfoo.so", "foo"),
        ] {
            assert_eq!(name_of(Path::new(file)), name);
        }
    }

    #[test]
    fn plugins_are_found_beside_the_library_then_in_the_packaged_folder() {
        let tmp = tempfile::Builder::new()
            .prefix("tandem-discover-")
            .tempdir()
            .expect("tmp");
        let (a, b) = (tmp.path().join("a/ep"), tmp.path().join("b/ep"));
        for (root, ep) in [(&a, "openvino"), (&b, "openvino"), (&b, "qnn")] {
            let dir = root.join(ep);
            std::fs::create_dir_all(&dir).expect("dir");
            let lib = format!("libonnxruntime_providers_{ep}_plugin.so");
            std::fs::write(dir.join(lib), b"").expect("file");
            std::fs::write(dir.join("libonnxruntime_providers_shared.so"), b"").expect("file");
        }
        let got = discover_in([&a, &b]);
        assert_eq!(
            got,
            [
                a.join("openvino/libonnxruntime_providers_openvino_plugin.so"),
                b.join("qnn/libonnxruntime_providers_qnn_plugin.so"),
            ]
        );
        assert_eq!(crate::runtime::PACKAGED_DIR, "/usr/lib/tandem");
    }
}
