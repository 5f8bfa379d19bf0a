//! Per-provider options (`[runtime.ep.<name>]`): their defaults, their validation, and the
//! key/value pairs each turns into for ONNX Runtime.

use serde::{Deserialize, Serialize};

/// `[runtime.ep]`: options of each execution provider (used only when it is in
/// `runtime.execution_providers`, or with `auto`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EpOptions {
    /// `[runtime.ep.openvino]`.
    pub openvino: OpenVinoOptions,
    /// `[runtime.ep.cuda]`.
    pub cuda: CudaOptions,
    /// `[runtime.ep.tensorrt]`.
    pub tensorrt: TensorRtOptions,
    /// `[runtime.ep.qnn]`.
    pub qnn: QnnOptions,
    /// `[runtime.ep.webgpu]`.
    pub webgpu: WebGpuOptions,
}

/// OpenVINO (plugin EP, `onnxruntime-ep-openvino`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenVinoOptions {
    /// Device: `CPU`, `GPU` or `NPU` (default `CPU`).
    pub device: String,
    /// Inference precision: `f32` (default), `f16`, `bf16`, or `default` (OpenVINO's own
    /// choice, which is bf16 on processors that have it and drifts from the CPU EP).
    pub precision: String,
}

/// CUDA (`onnxruntime-gpu`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CudaOptions {
    /// GPU index (default 0).
    pub device_id: u32,
}

/// TensorRT (`onnxruntime-gpu`, TensorRT 10 on the device).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TensorRtOptions {
    /// GPU index (default 0).
    pub device_id: u32,
    /// Folder where built engines are cached (empty, the default: no cache; each start
    /// rebuilds them, which takes seconds to minutes).
    pub engine_cache_dir: String,
    /// Let TensorRT run layers in FP16 (default false).
    pub fp16: bool,
    /// INT8 calibration table file; set: INT8 on (default empty: off).
    pub int8_calibration_table: String,
}

/// QNN (plugin EP, `onnxruntime-qnn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QnnOptions {
    /// Backend: `htp` (the Hexagon NPU, default), `cpu` (needs the QNN SDK's `libQnnCpu.so`,
    /// which the `onnxruntime-qnn` wheel lacks) or `gpu` (Adreno). QNN serves only with
    /// `engine.max_rows_per_run = 1`.
    pub backend: String,
}

/// WebGPU (plugin EP, `onnxruntime-ep-webgpu`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebGpuOptions {
    /// Adapter: a substring of the GPU vendor name ONNX Runtime reports (default empty: the
    /// first GPU).
    pub adapter: String,
}

impl Default for OpenVinoOptions {
    fn default() -> Self {
        Self {
            device: "CPU".into(),
            precision: "f32".into(),
        }
    }
}
impl Default for QnnOptions {
    fn default() -> Self {
        Self {
            backend: "htp".into(),
        }
    }
}

impl EpOptions {
    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !["CPU", "GPU", "NPU"].contains(&self.openvino.device.as_str()) {
            p.push(format!(
                "runtime.ep.openvino.device `{}` must be CPU, GPU or NPU",
                self.openvino.device
            ));
        }
        if !["f32", "f16", "bf16", "default"].contains(&self.openvino.precision.as_str()) {
            p.push(format!(
                "runtime.ep.openvino.precision `{}` must be f32, f16, bf16 or default",
                self.openvino.precision
            ));
        }
        if !["htp", "cpu", "gpu"].contains(&self.qnn.backend.as_str()) {
            p.push(format!(
                "runtime.ep.qnn.backend `{}` must be htp, cpu or gpu",
                self.qnn.backend
            ));
        }
        if self.cuda.device_id > 63 || self.tensorrt.device_id > 63 {
            p.push(
                "runtime.ep.cuda.device_id and runtime.ep.tensorrt.device_id must be below 64"
                    .into(),
            );
        }
        p
    }

    /// OpenVINO's `load_config` JSON for the precision (`None` for `default`).
    pub fn openvino_load_config(&self) -> Option<String> {
        let hint = match self.openvino.precision.as_str() {
            "default" => return None,
            other => other,
        };
        Some(format!(
            "{{\"{}\": {{\"INFERENCE_PRECISION_HINT\": \"{hint}\"}}}}",
            self.openvino.device
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(EpOptions::default().problems().is_empty());
        let mut o = EpOptions::default();
        o.openvino.device = "TPU".into();
        o.openvino.precision = "int4".into();
        o.qnn.backend = "dsp".into();
        o.cuda.device_id = 99;
        let p = o.problems();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("runtime.ep.openvino.device"));
    }

    #[test]
    fn openvino_precision_becomes_a_load_config() {
        let mut o = EpOptions::default();
        assert_eq!(
            o.openvino_load_config().as_deref(),
            Some(r#"{"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}"#)
        );
        o.openvino.precision = "default".into();
        assert_eq!(o.openvino_load_config(), None);
    }
}
