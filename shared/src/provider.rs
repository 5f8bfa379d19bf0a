//! Execution-provider names: the ordered list in a config, and the one reported as in use.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An ONNX Runtime execution provider the agent can ask for, in config spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// The default CPU provider: always available, the last resort.
    Cpu,
}

impl ExecutionProvider {
    /// Every provider, in the order of preference used when a config asks for `auto`.
    pub const ALL: [ExecutionProvider; 9] = [
        Self::Tensorrt,
        Self::Cuda,
        Self::Openvino,
        Self::Coreml,
        Self::Qnn,
        Self::Directml,
        Self::Rocm,
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
    "unknown execution provider `{0}` (known: tensorrt, cuda, openvino, coreml, qnn, directml, rocm, xnnpack, cpu)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in ExecutionProvider::ALL {
            assert_eq!(p.as_str().parse::<ExecutionProvider>(), Ok(p));
        }
        assert!("gpu".parse::<ExecutionProvider>().is_err());
    }
}
