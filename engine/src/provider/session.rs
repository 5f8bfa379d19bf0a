//! Building one ONNX Runtime session on one execution provider, pinned to that provider's
//! devices: never the default device policy, which, once a plugin is registered, silently
//! runs a "CPU" session on the plugin (or fails with QNN registered).
//!
//! QNN compiles a graph for static shapes: its sessions fix the batch dimension at 1 (so it
//! serves only with `engine.max_rows_per_run = 1`, and is skipped with that reason otherwise)
//! and turn ONNX Runtime's CPU fallback off, so a model QNN cannot take whole fails to build
//! instead of running on the CPU while reported as `qnn`.

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
    /// `engine.max_rows_per_run`: the most rows one run carries (QNN takes only 1).
    pub rows_per_run: usize,
}

/// Names a model's batch dimension may carry; QNN sessions fix each at 1.
pub const BATCH_DIM_NAMES: [&str; 2] = ["batch", "batch_size"];
/// The ONNX denotation of a batch dimension; QNN sessions fix it at 1 too.
pub const BATCH_DENOTATION: &str = "DATA_BATCH";

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

/// Why `e` cannot serve runs of `rows_per_run` rows (`None`: it can). QNN's graph is compiled
/// with the batch dimension fixed at 1.
pub fn rows_rule(e: ExecutionProvider, rows_per_run: usize) -> Option<String> {
    (e == ExecutionProvider::Qnn && rows_per_run != 1).then(|| {
        format!(
            "QNN runs with the batch dimension fixed at 1, and engine.max_rows_per_run is {rows_per_run}: set engine.max_rows_per_run = 1 to serve on QNN"
        )
    })
}

/// The batch dimension fixed at 1 (by [`BATCH_DIM_NAMES`] and [`BATCH_DENOTATION`]).
pub fn fixed_batch(b: SessionBuilder) -> Result<SessionBuilder, String> {
    let mut b = b
        .with_dimension_override_by_denotation(BATCH_DENOTATION, 1)
        .map_err(|e| e.to_string())?;
    for name in BATCH_DIM_NAMES {
        b = b
            .with_dimension_override(name, 1)
            .map_err(|e| e.to_string())?;
    }
    Ok(b)
}

/// [`fixed_batch`] and no CPU fallback: a node the provider cannot take fails the build.
pub fn static_batch_no_fallback(b: SessionBuilder) -> Result<SessionBuilder, String> {
    fixed_batch(b)?
        .with_disable_cpu_fallback()
        .map_err(|e| e.to_string())
}

/// Builds a session on `e`, pinned to its devices; `Err` says why it cannot.
pub fn build(p: &Params<'_>, e: ExecutionProvider) -> Result<Session, String> {
    if let Some(why) = rows_rule(e, p.rows_per_run) {
        return Err(why);
    }
    let b = base(p)?;
    let b = if e == ExecutionProvider::Qnn {
        static_batch_no_fallback(b)?
    } else {
        b
    };
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
    b.commit_from_file(p.path).map_err(|err| match e {
        ExecutionProvider::Qnn => format!(
            "QNN cannot run the whole model with the batch dimension fixed at 1 (another dynamic dimension, or an operator it lacks), and the CPU fallback is off: {err}"
        ),
        _ => err.to_string(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use ort::value::ValueType;

    #[test]
    fn qnn_is_skipped_with_its_reason_unless_runs_carry_one_row() {
        let why = rows_rule(ExecutionProvider::Qnn, 16).expect("16 rows: QNN skipped");
        assert!(
            why.contains("engine.max_rows_per_run is 16")
                && why.contains("engine.max_rows_per_run = 1"),
            "{why}"
        );
        assert_eq!(rows_rule(ExecutionProvider::Qnn, 1), None);
        for e in [ExecutionProvider::Cpu, ExecutionProvider::Openvino] {
            assert_eq!(rows_rule(e, 16), None, "{e}");
        }
    }

    /// The QNN session options on real sessions (the CPU's: no QNN is needed to see them take
    /// effect): the shipped model's `batch` dimension becomes 1, and the CPU fallback is off
    /// (ONNX Runtime refuses that beside an explicit CPU device).
    #[test]
    fn qnn_sessions_fix_the_batch_at_one_and_refuse_the_cpu_fallback() {
        let (s, env) = crate::runtime::for_tests();
        let model = s.base_dir.join("models/vision-fashion/edge.onnx");
        let first_dim = |session: &Session| match session.inputs()[0].dtype() {
            ValueType::Tensor { shape, .. } => shape[0],
            other => panic!("not a tensor: {other:?}"),
        };
        let on_cpu = |b: SessionBuilder| {
            let cpu: Vec<Device<'_>> = env
                .devices()
                .filter(|d| d.ep().ok() == Some("CPUExecutionProvider"))
                .collect();
            b.with_devices(cpu, None)
                .expect("CPU device")
                .commit_from_file(&model)
        };
        let builder = || Session::builder(&env).expect("builder");
        let free = on_cpu(builder()).expect("CPU session");
        assert_eq!(first_dim(&free), -1, "the shipped model's batch is free");
        let fixed = on_cpu(fixed_batch(builder()).expect("options")).expect("batch fixed");
        assert_eq!(first_dim(&fixed), 1);
        let err = on_cpu(static_batch_no_fallback(builder()).expect("options"))
            .expect_err("the CPU device with the CPU fallback off");
        assert!(err.to_string().contains("disabled fallback"), "{err}");
    }
}
