//! Building one ONNX Runtime session on one execution provider, pinned to that provider's
//! devices: never the default device policy, which, once a plugin is registered, silently
//! runs a "CPU" session on the plugin (or fails with QNN registered).

use super::options::EpOptions;
use super::plugins::Plugin;
use ort::device::Device;
use ort::environment::Environment;
use ort::ep;
use ort::memory::DeviceType;
use ort::session::Session;
use ort::session::builder::SessionBuilder;
use std::path::Path;
use tandem_shared::provider::ExecutionProvider;

/// What every session of a model is built with.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    /// The environment (plugins registered).
    pub env: &'a Environment,
    /// The ONNX file.
    pub path: &'a Path,
    /// `runtime.intra_op_threads`.
    pub intra_threads: usize,
    /// `runtime.intra_op_spinning`.
    pub spinning: bool,
    /// `[runtime.ep]`.
    pub options: &'a EpOptions,
    /// This config's plugin libraries.
    pub plugins: &'a [Plugin],
}

/// The plugin a provider comes from, and the names its devices carry.
fn plugin_of(e: ExecutionProvider) -> Option<(&'static str, &'static [&'static str])> {
    Some(match e {
        ExecutionProvider::Openvino => ("openvino", &["OpenVINOExecutionProvider"]),
        ExecutionProvider::Qnn => ("qnn", &["QNNExecutionProvider", "qnn"]),
        ExecutionProvider::Webgpu => ("webgpu", &["WebGpuExecutionProvider"]),
        ExecutionProvider::TensorrtRtx => (
            "nv_tensorrt_rtx",
            &["NvTensorRTRTXExecutionProvider", "nv_tensorrt_rtx"],
        ),
        _ => return None,
    })
}

/// Whether the provider is a plugin EP (it needs a registered library).
pub fn is_plugin(e: ExecutionProvider) -> bool {
    plugin_of(e).is_some()
}

fn base(p: &Params<'_>) -> Result<SessionBuilder, String> {
    Session::builder(p.env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(p.intra_threads)
        .map_err(|e| e.to_string())?
        .with_intra_op_spinning(p.spinning)
        .map_err(|e| e.to_string())
}

/// Builds a session on `e`, pinned to its devices; `Err` says why it cannot.
pub fn build(p: &Params<'_>, e: ExecutionProvider) -> Result<Session, String> {
    let b = base(p)?;
    let mut b = match e {
        ExecutionProvider::Cpu => {
            let cpu: Vec<Device<'_>> = p
                .env
                .devices()
                .filter(|d| d.ep().ok() == Some("CPUExecutionProvider"))
                .collect();
            if cpu.is_empty() {
                return Err("ONNX Runtime offers no CPU device".into());
            }
            b.with_devices(cpu, None).map_err(|e| e.to_string())?
        }
        e if is_plugin(e) => plugin_session(p, b, e)?,
        e => {
            let d = legacy(p.options, e);
            b.with_execution_providers([d.error_on_failure()])
                .map_err(|e| e.to_string())?
        }
    };
    b.commit_from_file(p.path).map_err(|e| e.to_string())
}

fn plugin_session(
    p: &Params<'_>,
    b: SessionBuilder,
    e: ExecutionProvider,
) -> Result<SessionBuilder, String> {
    let (plugin, ep_names) = plugin_of(e).ok_or_else(|| format!("{e} is not a plugin EP"))?;
    match p.plugins.iter().find(|pl| pl.name == plugin) {
        None => {
            return Err(format!(
                "no {plugin} plugin library (provision it with `scripts/provision-ep.sh`, or list it in runtime.ep_plugins)"
            ));
        }
        Some(Plugin {
            status: Err(why), ..
        }) => return Err(why.clone()),
        Some(_) => {}
    }
    let (want, adapter) = match e {
        ExecutionProvider::Openvino => (
            match p.options.openvino.device.as_str() {
                "GPU" => DeviceType::GPU,
                "NPU" => DeviceType::NPU,
                _ => DeviceType::CPU,
            },
            "",
        ),
        ExecutionProvider::Qnn => (DeviceType::NPU, ""),
        _ => (DeviceType::GPU, p.options.webgpu.adapter.as_str()),
    };
    let devices: Vec<Device<'_>> = p
        .env
        .devices()
        .filter(|d| d.ep().is_ok_and(|n| ep_names.contains(&n)))
        .filter(|d| e == ExecutionProvider::Qnn || d.hardware_device().ty() == want)
        .filter(|d| {
            adapter.is_empty()
                || d.hardware_device()
                    .vendor()
                    .is_ok_and(|v| v.to_lowercase().contains(&adapter.to_lowercase()))
        })
        .take(1)
        .collect();
    let Some(ep_name) = devices.first().and_then(|d| d.ep().ok()) else {
        return Err(format!(
            "the {plugin} plugin offers no {} device on this machine",
            super::plugins::kind_name(want)
        ));
    };
    let key = |k: &str| format!("{ep_name}.{k}");
    let mut opts = Vec::new();
    match e {
        ExecutionProvider::Openvino => {
            opts.push((key("num_of_threads"), p.intra_threads.to_string()));
            if let Some(json) = p.options.openvino_load_config() {
                opts.push((key("load_config"), load_config_file(&json)?));
            }
        }
        ExecutionProvider::Qnn => opts.push((key("backend_type"), p.options.qnn.backend.clone())),
        _ => {}
    }
    b.with_devices(devices, Some(&opts))
        .map_err(|e| e.to_string())
}

/// OpenVINO takes its `load_config` as a file: one per distinct content, in the temp folder.
fn load_config_file(json: &str) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(json.as_bytes()));
    let path = std::env::temp_dir().join(format!("tandem-openvino-{}.json", &digest[..16]));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(json) {
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write OpenVINO load_config {}: {e}", path.display()))?;
    }
    Ok(path.display().to_string())
}

/// A provider compiled into ONNX Runtime (the `onnxruntime-gpu` library carries CUDA and
/// TensorRT; the CPU library none).
fn legacy(o: &EpOptions, e: ExecutionProvider) -> ep::ExecutionProviderDispatch {
    match e {
        ExecutionProvider::Tensorrt => {
            let t = &o.tensorrt;
            let mut trt = ep::TensorRT::default()
                .with_device_id(i32::try_from(t.device_id).unwrap_or(0))
                .with_fp16(t.fp16);
            if !t.engine_cache_dir.is_empty() {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&t.engine_cache_dir);
            }
            if !t.int8_calibration_table.is_empty() {
                trt = trt
                    .with_int8(true)
                    .with_int8_calibration_table_name(&t.int8_calibration_table);
            }
            trt.build()
        }
        ExecutionProvider::Cuda => ep::CUDA::default()
            .with_device_id(i32::try_from(o.cuda.device_id).unwrap_or(0))
            .build(),
        ExecutionProvider::Coreml => ep::CoreML::default().build(),
        ExecutionProvider::Directml => ep::DirectML::default().build(),
        ExecutionProvider::Rocm => ep::ROCm::default().build(),
        _ => ep::XNNPACK::default().build(),
    }
}
