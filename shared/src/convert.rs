//! Conversions between the wire protocol's raw tensors ([`wire::Tensor`]) and decoded element
//! data ([`TensorData`]), used where the agent and the hub meet the engine.

use crate::oip::TensorData;
use crate::wire::{self, DType};

/// Decodes a wire tensor's little-endian bytes. `U8` becomes one byte string.
pub fn tensor_data(t: &wire::Tensor) -> TensorData {
    match t.dtype {
        DType::F32 => TensorData::F32(
            t.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::I64 => TensorData::I64(
            t.data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        DType::U8 => TensorData::Bytes(vec![t.data.clone()]),
    }
}

/// Encodes element data as a wire tensor (byte strings are concatenated as `U8`).
pub fn wire_tensor(name: &str, shape: &[i64], data: &TensorData) -> wire::Tensor {
    let (dtype, bytes) = match data {
        TensorData::F32(v) => (DType::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::I64(v) => (DType::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::Bytes(v) => (DType::U8, v.concat()),
    };
    wire::Tensor {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        data: bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for d in [
            TensorData::F32(vec![1.5, -2.0]),
            TensorData::I64(vec![7, -9]),
        ] {
            let w = wire_tensor("x", &[2], &d);
            assert_eq!(tensor_data(&w), d);
        }
    }
}
