//! Execution-provider names: the ordered list in a config, and the one reported as in use.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An ONNX Runtime execution provider the agent can ask for, in config spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionProvider {
    /// NVIDIA TensorRT.
    Tensorrt,
    /// NVIDIA CUDA.
    Cuda,
    /// Intel OpenVINO.
    Openvino,
    /// Apple Core ML.
    Coreml,
    /// Qualcomm QNN (Hexagon NPU).
    Qnn,
    /// Windows DirectML.
    Directml,
    /// AMD ROCm.
    Rocm,
    /// XNNPACK (optimised CPU kernels for ARM/x86).
    Xnnpack,
    /// WebGPU (plugin EP: Vulkan, D3D12 or Metal GPUs).
    Webgpu,
    /// NVIDIA TensorRT for RTX (plugin EP).
    TensorrtRtx,
    /// The default CPU provider: always available, the last resort.
    Cpu,
}

impl ExecutionProvider {
    /// Every provider, in the order of preference used when a config asks for `auto`.
    pub const ALL: [ExecutionProvider; 11] = [
        Self::Tensorrt,
        Self::TensorrtRtx,
        Self::Cuda,
        Self::Openvino,
        Self::Coreml,
        Self::Qnn,
        Self::Directml,
        Self::Rocm,
        Self::Webgpu,
        Self::Xnnpack,
        Self::Cpu,
    ];

    /// The config spelling (`cuda`, `cpu`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tensorrt => "tensorrt",
            Self::Cuda => "cuda",
            Self::Openvino => "openvino",
            Self::Coreml => "coreml",
            Self::Qnn => "qnn",
            Self::Directml => "directml",
            Self::Rocm => "rocm",
            Self::Xnnpack => "xnnpack",
            Self::Webgpu => "webgpu",
            Self::TensorrtRtx => "tensorrt_rtx",
            Self::Cpu => "cpu",
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an execution provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown execution provider `{0}` (known: tensorrt, tensorrt_rtx, cuda, openvino, coreml, qnn, directml, rocm, webgpu, xnnpack, cpu; or auto alone)"
)]
pub struct UnknownProvider(pub String);

impl FromStr for ExecutionProvider {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProvider(s.to_string()))
    }
}

/// What was measured of one provider on one model: the accuracy gate against the model's
/// reference outputs, and with `auto` its speed (status, telemetry, `/v2/models/{m}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpMeasurement {
    /// The provider (config spelling).
    pub ep: String,
    /// Whether it loaded the model and reproduced the reference outputs.
    pub accurate: bool,
    /// Largest |output - reference| (absent when it did not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_diff: Option<f64>,
    /// Median run time of one reference case, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_us: Option<f64>,
    /// Time to build the session, milliseconds.
    pub build_ms: f64,
    /// Why it is not used (absent when it could be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Taken from the cache of an earlier measurement (same model digest, provider, options,
    /// hardware).
    #[serde(default)]
    pub cached: bool,
}

/// A device ONNX Runtime discovers on the machine (the hardware inventory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accelerator {
    /// The EP offering it (`CPUExecutionProvider`, `OpenVINOExecutionProvider`, ...).
    pub ep: String,
    /// The EP's vendor.
    pub ep_vendor: String,
    /// `cpu`, `gpu`, `npu` (or `fpga`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The hardware vendor.
    pub vendor: String,
    /// The hardware device id.
    pub device_id: u32,
}

impl Accelerator {
    /// The label the device reports for it, which a rollout can target (`--labels
    /// accelerator.gpu.cuda=true`): `accelerator.<type>.<ep>` with the EP's name lowercased
    /// and without `ExecutionProvider` (`accelerator.cpu.openvino`, `accelerator.npu.qnn`).
    pub fn label_key(&self) -> String {
        let ep = self.ep.split('.').next().unwrap_or(&self.ep);
        let ep = ep.strip_suffix("ExecutionProvider").unwrap_or(ep);
        format!("accelerator.{}.{}", self.kind, ep.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerators_become_labels() {
        let a = |ep: &str, kind: &str| Accelerator {
            ep: ep.into(),
            ep_vendor: String::new(),
            kind: kind.into(),
            vendor: "Intel".into(),
            device_id: 0,
        };
        assert_eq!(
            a("OpenVINOExecutionProvider", "cpu").label_key(),
            "accelerator.cpu.openvino"
        );
        assert_eq!(
            a("CUDAExecutionProvider", "gpu").label_key(),
            "accelerator.gpu.cuda"
        );
        assert_eq!(a("qnn", "npu").label_key(), "accelerator.npu.qnn");
    }

    #[test]
    fn names_round_trip() {
        for p in ExecutionProvider::ALL {
            assert_eq!(p.as_str().parse::<ExecutionProvider>(), Ok(p));
        }
        assert!("gpu".parse::<ExecutionProvider>().is_err());
    }
}
