//! Open Inference Protocol v2 (KServe / Triton) REST messages and the binary tensor data
//! extension: a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
//! tensors, in input (or output) order, for every tensor whose parameters carry
//! `binary_data_size`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// HTTP header naming the length of the JSON part of a binary-extension body.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Element data of one tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `FP32`.
    F32(Vec<f32>),
    /// `INT64`.
    I64(Vec<i64>),
    /// `BYTES`: one byte string per element.
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    /// The OIP datatype name.
    pub fn datatype(&self) -> &'static str {
        match self {
            Self::F32(_) => "FP32",
            Self::I64(_) => "INT64",
            Self::Bytes(_) => "BYTES",
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::Bytes(v) => v.len(),
        }
    }
    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn to_json(&self) -> Value {
        match self {
            Self::F32(v) => Value::from(v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>()),
            Self::I64(v) => Value::from(v.clone()),
            Self::Bytes(v) => Value::from(
                v.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<Vec<_>>(),
            ),
        }
    }
    fn to_raw(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Bytes(v) => {
                let mut out = Vec::new();
                for b in v {
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
                out
            }
        }
    }
}

/// An inference request body (JSON part).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InferRequest {
    /// Caller's request id, echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Request parameters (`binary_data_output`, `deadline_ms`, ...).
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Input tensors.
    pub inputs: Vec<RequestInput>,
    /// Requested outputs; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor as sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RequestInput {
    /// Input name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// `FP32`, `INT64`, `BYTES`, ...
    pub datatype: String,
    /// `binary_data_size` when the data follows the JSON.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Inline data (flat or nested) when not binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<InlineData>,
}

/// Inline tensor data, flattened row-major while it is parsed: nested arrays never become a
/// JSON tree (a `[1,1,28,28]` image would be 814 `Value`s and 30 vectors to build, walk and
/// free on every request). Serialises as a flat array.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InlineData(pub Vec<Scalar>);

/// One inline element as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// An integer that fits `i64`.
    Int(i64),
    /// A larger non-negative integer.
    UInt(u64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A string (`BYTES`).
    Str(String),
    /// `true`, `false`, `null` or an object: valid for no datatype.
    Other,
}

impl Scalar {
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Int(v) => Some(v as f64),
            Self::UInt(v) => Some(v as f64),
            Self::Float(v) => Some(v),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::Int(v) => Some(v),
            _ => None,
        }
    }
}

/// Appends every element of a (possibly nested) JSON value to the vector it holds.
struct Flatten<'a>(&'a mut Vec<Scalar>);

impl<'de> serde::de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tensor data: a value or (nested) arrays of values")
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0
            .push(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Scalar::Float(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Scalar::Str(v.to_owned()));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Scalar::Str(v));
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.0.push(Scalar::Other);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Scalar::Other);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.0.push(Scalar::Other);
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.0.reserve(n);
        }
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        self.0.push(Scalar::Other);
        Ok(())
    }
}

impl<'de> Deserialize<'de> for InlineData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut flat = Vec::new();
        serde::de::DeserializeSeed::deserialize(Flatten(&mut flat), d)?;
        Ok(Self(flat))
    }
}

impl Serialize for InlineData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in &self.0 {
            match v {
                Scalar::Int(x) => seq.serialize_element(x)?,
                Scalar::UInt(x) => seq.serialize_element(x)?,
                Scalar::Float(x) => seq.serialize_element(x)?,
                Scalar::Str(x) => seq.serialize_element(x)?,
                Scalar::Other => seq.serialize_element(&())?,
            }
        }
        seq.end()
    }
}

/// One requested output.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RequestOutput {
    /// Output name.
    pub name: String,
    /// `binary_data: bool`, ...
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// A decoded input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    /// Input name.
    pub name: String,
    /// Shape (all dims >= 0).
    pub shape: Vec<i64>,
    /// The elements.
    pub data: TensorData,
}

/// A decoded request.
#[derive(Debug, Clone)]
pub struct DecodedRequest {
    /// Caller's id.
    pub id: Option<String>,
    /// Request parameters.
    pub parameters: Map<String, Value>,
    /// Inputs in request order.
    pub inputs: Vec<InputTensor>,
    /// Requested outputs, when named.
    pub outputs: Option<Vec<RequestOutput>>,
}

/// Why a request body cannot be decoded. Every variant is the caller's mistake (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OipError {
    /// JSON part does not parse.
    #[error("request JSON is invalid: {0}")]
    Json(String),
    /// The header length points past the body.
    #[error("Inference-Header-Content-Length {header} exceeds the body length {body}")]
    HeaderLength {
        /// Declared JSON length.
        header: usize,
        /// Whole body length.
        body: usize,
    },
    /// Unsupported datatype.
    #[error("input `{name}`: datatype `{datatype}` is not supported (use FP32, INT64 or BYTES)")]
    Datatype {
        /// Input name.
        name: String,
        /// Datatype sent.
        datatype: String,
    },
    /// Negative or overflowing shape.
    #[error("input `{name}`: shape {shape:?} is invalid")]
    Shape {
        /// Input name.
        name: String,
        /// Shape sent.
        shape: Vec<i64>,
    },
    /// Element count differs from the shape.
    #[error("input `{name}`: shape {shape:?} needs {expected} elements but {got} were sent")]
    Count {
        /// Input name.
        name: String,
        /// Shape sent.
        shape: Vec<i64>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements sent.
        got: usize,
    },
    /// Binary data missing, short or misaligned.
    #[error("input `{name}`: binary data is malformed: {why}")]
    Binary {
        /// Input name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Inline data of the wrong JSON type.
    #[error("input `{name}`: data must be {want}")]
    Data {
        /// Input name.
        name: String,
        /// What was expected.
        want: &'static str,
    },
    /// Bytes left over after the last binary input.
    #[error("{0} trailing bytes after the last binary input")]
    Trailing(usize),
}

fn shape_elements(name: &str, shape: &[i64]) -> Result<usize, OipError> {
    let bad = || OipError::Shape {
        name: name.to_string(),
        shape: shape.to_vec(),
    };
    shape.iter().try_fold(1usize, |acc, d| {
        let d = usize::try_from(*d).map_err(|_| bad())?;
        acc.checked_mul(d).ok_or_else(bad)
    })
}

fn decode_inline(input: &RequestInput) -> Result<TensorData, OipError> {
    let name = input.name.clone();
    let flat: &[Scalar] = input.data.as_ref().map_or(&[], |d| &d.0);
    let data_err = |want| OipError::Data {
        name: name.clone(),
        want,
    };
    Ok(match input.datatype.as_str() {
        "FP32" => TensorData::F32(
            flat.iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| data_err("numbers for FP32"))?,
        ),
        "INT64" => TensorData::I64(
            flat.iter()
                .map(|v| v.as_i64())
                .collect::<Option<_>>()
                .ok_or_else(|| data_err("integers for INT64"))?,
        ),
        "BYTES" => TensorData::Bytes(
            flat.iter()
                .map(|v| match v {
                    Scalar::Str(s) => Some(s.as_bytes().to_vec()),
                    _ => None,
                })
                .collect::<Option<_>>()
                .ok_or_else(|| data_err("strings for BYTES"))?,
        ),
        other => {
            return Err(OipError::Datatype {
                name,
                datatype: other.to_string(),
            });
        }
    })
}

fn decode_binary(input: &RequestInput, raw: &[u8]) -> Result<TensorData, OipError> {
    let name = input.name.clone();
    let bin_err = |why: String| OipError::Binary {
        name: name.clone(),
        why,
    };
    let fixed = |size: usize| -> Result<std::slice::ChunksExact<'_, u8>, OipError> {
        if !raw.len().is_multiple_of(size) {
            return Err(bin_err(format!(
                "{} bytes is not a multiple of the element size {size}",
                raw.len()
            )));
        }
        Ok(raw.chunks_exact(size))
    };
    Ok(match input.datatype.as_str() {
        "FP32" => TensorData::F32(
            fixed(4)?
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "INT64" => TensorData::I64(
            fixed(8)?
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        "BYTES" => {
            let mut items = Vec::new();
            let mut rest = raw;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(bin_err("a BYTES element length prefix is cut short".into()));
                }
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                rest = &rest[4..];
                if len > rest.len() {
                    return Err(bin_err(format!(
                        "a BYTES element declares {len} bytes but only {} remain",
                        rest.len()
                    )));
                }
                items.push(rest[..len].to_vec());
                rest = &rest[len..];
            }
            TensorData::Bytes(items)
        }
        other => {
            return Err(OipError::Datatype {
                name,
                datatype: other.to_string(),
            });
        }
    })
}

/// Decodes a request body. `header_len` is the `Inference-Header-Content-Length` value, if any.
pub fn decode_request(body: &[u8], header_len: Option<usize>) -> Result<DecodedRequest, OipError> {
    let json_len = header_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(OipError::HeaderLength {
            header: json_len,
            body: body.len(),
        });
    }
    let (json, mut binary) = body.split_at(json_len);
    let req: InferRequest =
        serde_json::from_slice(json).map_err(|e| OipError::Json(e.to_string()))?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in &req.inputs {
        let expected = shape_elements(&input.name, &input.shape)?;
        let data = match input.parameters.get("binary_data_size") {
            Some(size) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| OipError::Binary {
                        name: input.name.clone(),
                        why: "binary_data_size must be a non-negative integer".into(),
                    })?;
                if size > binary.len() {
                    return Err(OipError::Binary {
                        name: input.name.clone(),
                        why: format!(
                            "binary_data_size {size} exceeds the {} bytes remaining",
                            binary.len()
                        ),
                    });
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                decode_binary(input, mine)?
            }
            None => decode_inline(input)?,
        };
        if data.len() != expected {
            return Err(OipError::Count {
                name: input.name.clone(),
                shape: input.shape.clone(),
                expected,
                got: data.len(),
            });
        }
        inputs.push(InputTensor {
            name: input.name.clone(),
            shape: input.shape.clone(),
            data,
        });
    }
    if !binary.is_empty() {
        return Err(OipError::Trailing(binary.len()));
    }
    Ok(DecodedRequest {
        id: req.id,
        parameters: req.parameters,
        inputs,
        outputs: req.outputs,
    })
}

/// One output tensor to send back.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Output name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// The elements.
    pub data: TensorData,
    /// Send as binary (after the JSON) instead of inline.
    pub binary: bool,
}

/// Encodes a response. Returns the body and, when any output is binary, the JSON length for the
/// `Inference-Header-Content-Length` header.
pub fn encode_response(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    parameters: Map<String, Value>,
    outputs: &[OutputTensor],
) -> (Vec<u8>, Option<usize>) {
    let mut binary = Vec::new();
    let outs: Vec<Value> = outputs
        .iter()
        .map(|o| {
            let mut obj = Map::new();
            obj.insert("name".into(), Value::from(o.name.clone()));
            obj.insert("datatype".into(), Value::from(o.data.datatype()));
            obj.insert("shape".into(), Value::from(o.shape.clone()));
            if o.binary {
                let raw = o.data.to_raw();
                let mut p = Map::new();
                p.insert("binary_data_size".into(), Value::from(raw.len()));
                obj.insert("parameters".into(), Value::Object(p));
                binary.extend_from_slice(&raw);
            } else {
                obj.insert("data".into(), o.data.to_json());
            }
            Value::Object(obj)
        })
        .collect();
    let mut resp = Map::new();
    resp.insert("model_name".into(), Value::from(model_name));
    resp.insert("model_version".into(), Value::from(model_version));
    if let Some(id) = id {
        resp.insert("id".into(), Value::from(id));
    }
    if !parameters.is_empty() {
        resp.insert("parameters".into(), Value::Object(parameters));
    }
    resp.insert("outputs".into(), Value::Array(outs));
    let mut body = serde_json::to_vec(&Value::Object(resp)).unwrap_or_default();
    let any_binary = outputs.iter().any(|o| o.binary);
    let json_len = body.len();
    body.extend_from_slice(&binary);
    (body, any_binary.then_some(json_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_inline_nested_json() {
        let body =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#;
        let d = decode_request(body, None).expect("decodes");
        assert_eq!(d.inputs[0].data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.5]));
        let deep = br#"{"inputs":[{"name":"x","shape":[1,1,2,2],"datatype":"FP32","data":[[[[1,-2e0],[3,4]]]]}]}"#;
        let d = decode_request(deep, None).expect("decodes");
        assert_eq!(d.inputs[0].data, TensorData::F32(vec![1.0, -2.0, 3.0, 4.0]));
        let ints = br#"{"inputs":[{"name":"i","shape":[3],"datatype":"INT64","data":[[-1],[2],[9223372036854775807]]}]}"#;
        let d = decode_request(ints, None).expect("decodes");
        assert_eq!(d.inputs[0].data, TensorData::I64(vec![-1, 2, i64::MAX]));
        let text = br#"{"inputs":[{"name":"t","shape":[2],"datatype":"BYTES","data":["a","b"]}]}"#;
        let d = decode_request(text, None).expect("decodes");
        assert_eq!(
            d.inputs[0].data,
            TensorData::Bytes(vec![b"a".to_vec(), b"b".to_vec()])
        );
    }

    #[test]
    fn inline_data_of_the_wrong_kind_is_refused() {
        for (body, want) in [
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,"a"]}]}"#,
                "numbers for FP32",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,{"a":[1]}]}]}"#,
                "numbers for FP32",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","data":[1,2.5]}]}"#,
                "integers for INT64",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[18446744073709551615]}]}"#,
                "integers for INT64",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a",true]}]}"#,
                "strings for BYTES",
            ),
        ] {
            let e = decode_request(body.as_bytes(), None).expect_err(body);
            assert_eq!(
                e,
                OipError::Data {
                    name: "x".into(),
                    want
                },
                "{body}"
            );
        }
        let unclosed = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[[1,2]}]}"#;
        assert!(matches!(
            decode_request(unclosed, None),
            Err(OipError::Json(_))
        ));
        // Deep nesting is refused by the JSON parser's depth limit, not by a stack overflow.
        let deep = format!(
            r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            decode_request(deep.as_bytes(), None),
            Err(OipError::Json(_))
        ));
        let data = InlineData(vec![
            Scalar::Int(1),
            Scalar::Float(0.5),
            Scalar::Str("s".into()),
        ]);
        assert_eq!(
            serde_json::to_string(&data).expect("serialises"),
            r#"[1,0.5,"s"]"#
        );
    }

    #[test]
    fn decodes_binary_extension() {
        let json = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"t","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":7}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.0f32).to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"abc");
        let d = decode_request(&body, Some(json.len())).expect("decodes");
        assert_eq!(d.inputs[0].data, TensorData::F32(vec![1.5, -2.0]));
        assert_eq!(d.inputs[1].data, TensorData::Bytes(vec![b"abc".to_vec()]));
    }

    #[test]
    fn rejects_lies() {
        let json = br#"{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode_request(&body, Some(json.len())),
            Err(OipError::Binary { .. })
        ));
        assert!(matches!(
            decode_request(&body, Some(body.len() + 1)),
            Err(OipError::HeaderLength { .. })
        ));
        let count = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#;
        assert!(matches!(
            decode_request(count, None),
            Err(OipError::Count {
                expected: 3,
                got: 2,
                ..
            })
        ));
        let neg = br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[]}]}"#;
        assert!(matches!(
            decode_request(neg, None),
            Err(OipError::Shape { .. })
        ));
        let huge = br#"{"inputs":[{"name":"x","shape":[9223372036854775807,9223372036854775807],"datatype":"FP32","data":[]}]}"#;
        assert!(matches!(
            decode_request(huge, None),
            Err(OipError::Shape { .. })
        ));
        let dt = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#;
        assert!(matches!(
            decode_request(dt, None),
            Err(OipError::Datatype { .. })
        ));
    }

    #[test]
    fn binary_response_round_trips_through_the_decoder() {
        let outs = [OutputTensor {
            name: "x".into(),
            shape: vec![2],
            data: TensorData::F32(vec![0.25, 0.75]),
            binary: true,
        }];
        let (body, len) = encode_response("m", "1", Some("r1"), Map::new(), &outs);
        let len = len.expect("binary");
        let v: Value = serde_json::from_slice(&body[..len]).expect("json");
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(&body[len..len + 4], &0.25f32.to_le_bytes());
    }
}
