//! Open Inference Protocol v2 REST endpoints, with the binary tensor data extension and the
//! classification extension, so Triton and KServe clients work unchanged. The handlers are
//! generic over the daemon's [`OipService`]: the conversions (request → [`Input`], answer →
//! response, metadata, errors) are the same for every daemon.

use super::error::ApiError;
use super::{Answered, Call, OipService, params};
use crate::{Engine, Inference, Input, ModelHandle};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tandem_shared::manifest::{DType, Preprocess};
use tandem_shared::oip::{self, DecodedRequest, OutputTensor, TensorData};

/// `{model}` and, on the `/versions/{version}` routes, `{version}`.
#[derive(Debug, Deserialize)]
pub struct ModelPath {
    /// Model name.
    pub model: String,
    /// Version asked for; `None` means the one served.
    pub version: Option<String>,
}

/// `GET /v2`.
pub async fn server_metadata<S: OipService>(State(s): State<Arc<S>>) -> Json<Value> {
    Json(json!({
        "name": s.context().server_name,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification"],
    }))
}

/// `GET /v2/health/live`: the process answers.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: every loaded model accepts requests.
pub async fn ready<S: OipService>(State(s): State<Arc<S>>) -> Result<Json<Value>, ApiError> {
    if s.context().engine.models().all(|m| m.ready()) {
        Ok(Json(json!({ "ready": true })))
    } else {
        Err(ApiError::Unavailable("not every model is ready".into()))
    }
}

/// The loaded model `model`, checked against the version asked for.
pub fn find<'a>(
    engine: &'a Engine,
    model: &str,
    version: Option<&str>,
) -> Result<&'a Arc<ModelHandle>, ApiError> {
    let h = engine
        .model(model)
        .ok_or_else(|| ApiError::NotFound(format!("model `{model}` is not loaded")))?;
    match version {
        Some(v) if v != h.files.manifest.version => Err(ApiError::NotFound(format!(
            "model `{model}` has no version `{v}` (serving `{}`)",
            h.files.manifest.version
        ))),
        _ => Ok(h),
    }
}

/// A model's OIP metadata: its tensors plus the raw `image` or `text` BYTES input (a
/// detection model's outputs: `detections` and the box tensors of `params`), and in
/// `parameters` the most rows one request may carry (`max_batch_size`, as Triton names it;
/// `engine.max_rows_per_request`: 413 above).
pub fn metadata(h: &ModelHandle) -> Value {
    let v = &h.files.variant;
    let tensor = |name: &str, dtype: DType, shape: &[i64]| json!({"name": name, "datatype": dtype.oip_name(), "shape": shape});
    let raw_input = match &v.preprocess {
        Preprocess::Image(_) => {
            json!({"name": "image", "datatype": "BYTES", "shape": [-1], "parameters": {"content": "JPEG or PNG file bytes; an alternative to the tensor input"}})
        }
        Preprocess::Text(_) => {
            json!({"name": "text", "datatype": "BYTES", "shape": [-1], "parameters": {"content": "UTF-8 text; an alternative to the token inputs"}})
        }
    };
    let mut inputs: Vec<Value> = v
        .inputs
        .iter()
        .map(|i| tensor(&i.name, i.dtype, &i.shape))
        .collect();
    inputs.push(raw_input);
    let mut outputs: Vec<Value> = v
        .outputs
        .iter()
        .map(|o| tensor(&o.name, o.dtype, &o.shape))
        .collect();
    if let Some(d) = &v.detection {
        // The head's raw outputs stay inside: a response carries the decoded boxes.
        let slots = d.max_detections as i64;
        let fields = tandem_shared::detect::DETECTION_FIELDS as i64;
        outputs = vec![tensor(
            tandem_shared::detect::DETECTIONS_OUTPUT,
            DType::Float32,
            &[-1, slots, fields],
        )];
        let dims: [&[i64]; 4] = [&[-1, -1, 4], &[-1, -1], &[-1, -1], &[-1]];
        let types = [DType::Float32, DType::Float32, DType::Int64, DType::Int64];
        for ((name, dims), dtype) in params::DETECTION_TENSORS.iter().zip(dims).zip(types) {
            outputs.push(tensor(name, dtype, dims));
        }
    }
    json!({
        "name": h.name(),
        "versions": [h.files.manifest.version],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "task": h.files.manifest.task,
            "variant": h.files.role.as_str(),
            "execution_provider": h.ep_now().as_str(),
            "execution_provider_auto": h.ep_auto,
            "execution_provider_failovers": h.ep_failovers(),
            "execution_providers_measured": h.ep_measured.iter().map(|m| m.to_contract()).collect::<Vec<_>>(),
            "quantization": v.quantization,
            "labels": h.files.labels.len(),
            "max_batch_size": h.max_rows(),
        },
    })
}

/// `GET /v2/models/{m}[/versions/{v}]`.
pub async fn model_metadata<S: OipService>(
    State(s): State<Arc<S>>,
    Path(p): Path<ModelPath>,
) -> Result<Json<Value>, ApiError> {
    let h = find(&s.context().engine, &p.model, p.version.as_deref())?;
    Ok(Json(metadata(h)))
}

/// `GET /v2/models/{m}[/versions/{v}]/ready`.
pub async fn model_ready<S: OipService>(
    State(s): State<Arc<S>>,
    Path(p): Path<ModelPath>,
) -> Result<Json<Value>, ApiError> {
    let h = find(&s.context().engine, &p.model, p.version.as_deref())?;
    if h.ready() {
        Ok(Json(json!({ "name": h.name(), "ready": true })))
    } else {
        Err(ApiError::Unavailable(format!(
            "model `{}` is not ready",
            h.name()
        )))
    }
}

/// The engine input for a decoded request: its tensors, or the images or texts of its one
/// BYTES input.
pub fn to_input(h: &ModelHandle, req: DecodedRequest) -> Result<Input, ApiError> {
    if !req
        .inputs
        .iter()
        .any(|i| matches!(i.data, TensorData::Bytes(_)))
    {
        return Ok(Input::tensors(req.inputs));
    }
    let [only] = <[_; 1]>::try_from(req.inputs).map_err(|_| {
        ApiError::BadRequest("a BYTES input (image or text) must be the only input".into())
    })?;
    let TensorData::Bytes(items) = only.data else {
        return Err(ApiError::Internal("BYTES input lost its type".into()));
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "input `{}` has no elements",
            only.name
        )));
    }
    match &h.files.variant.preprocess {
        Preprocess::Image(_) => Ok(Input::Images(items.into_iter().map(Bytes::from).collect())),
        Preprocess::Text(_) => items
            .into_iter()
            .map(|b| {
                String::from_utf8(b).map_err(|_| {
                    ApiError::BadRequest(format!("input `{}` is not valid UTF-8", only.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Input::Texts),
    }
}

/// Which outputs to return, binary or not, or as classification strings. A detection model
/// offers its `detections` tensor and the boxes as `boxes`, `scores`, `classes` and
/// `num_detections` (`params::detection_outputs`); all of them when none is asked for.
pub fn select_outputs(
    req_outputs: Option<&[oip::RequestOutput]>,
    binary_default: bool,
    inf: &Inference,
) -> Result<Vec<OutputTensor>, ApiError> {
    let as_bool = |p: &Map<String, Value>, k: &str| p.get(k).and_then(Value::as_bool);
    let mut offered: Vec<(&str, Vec<i64>, TensorData)> = inf
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.shape.clone(), o.data.clone()))
        .collect();
    offered.extend(params::detection_outputs(&inf.detections));
    let Some(wanted) = req_outputs else {
        return Ok(offered
            .into_iter()
            .map(|(name, shape, data)| OutputTensor {
                name: name.to_string(),
                shape,
                data,
                binary: binary_default,
            })
            .collect());
    };
    wanted
        .iter()
        .map(|w| {
            let (name, shape, data) = offered.iter().find(|o| o.0 == w.name).ok_or_else(|| {
                let known: Vec<&str> = offered.iter().map(|o| o.0).collect();
                ApiError::BadRequest(format!(
                    "unknown output `{}` (outputs: {})",
                    w.name,
                    known.join(", ")
                ))
            })?;
            let binary = as_bool(&w.parameters, "binary_data").unwrap_or(binary_default);
            if let Some(k) = classification_k(w) {
                let rows: Vec<Vec<u8>> =
                    inf.predictions
                        .iter()
                        .flat_map(|p| {
                            p.top_k.iter().take(k).map(|c| {
                                format!("{}:{}:{}", c.score, c.index, c.label).into_bytes()
                            })
                        })
                        .collect();
                let per = k.min(inf.predictions.first().map_or(0, |p| p.top_k.len()));
                return Ok(OutputTensor {
                    name: name.to_string(),
                    shape: vec![inf.predictions.len() as i64, per as i64],
                    data: TensorData::Bytes(rows),
                    binary,
                });
            }
            Ok(OutputTensor {
                name: name.to_string(),
                shape: shape.clone(),
                data: data.clone(),
                binary,
            })
        })
        .collect()
}

/// The `k` of an output's classification extension parameter.
fn classification_k(w: &oip::RequestOutput) -> Option<usize> {
    w.parameters
        .get("classification")
        .and_then(Value::as_u64)
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX))
}

/// The decoded body, with the binary extension's JSON length from its header when present.
fn decode(headers: &HeaderMap, body: &[u8]) -> Result<DecodedRequest, ApiError> {
    let header_len = match headers.get(oip::HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Inference-Header-Content-Length is not a number".into())
                })?,
        ),
    };
    Ok(oip::decode_request(body, header_len)?)
}

/// `POST /v2/models/{m}[/versions/{v}]/infer`.
pub async fn infer<S: OipService>(
    State(s): State<Arc<S>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limits = &s.context().limits;
    let body = body.map_err(|e| ApiError::from_body(e, limits))?;
    let h = find(&s.context().engine, &p.model, p.version.as_deref())?;
    let req = decode(&headers, &body)?;
    let binary_default = req
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let id = req.id.clone();
    let req_outputs = req.outputs.clone();
    // The most classes any output asks for: the answer is decoded with that k.
    let top_k = req_outputs
        .iter()
        .flatten()
        .filter_map(classification_k)
        .max();
    let deadline_ms = req
        .parameters
        .get("deadline_ms")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok());
    let input = to_input(h, req)?;
    let Answered {
        inference: inf,
        parameters,
    } = tokio::time::timeout(
        limits.request_timeout,
        s.answer(Call {
            model: &p.model,
            input,
            deadline_ms,
            top_k,
        }),
    )
    .await
    .map_err(|_| ApiError::timeout(limits))??;
    let outputs = select_outputs(req_outputs.as_deref(), binary_default, &inf)?;
    let (bytes, json_len) = oip::encode_response(
        &inf.model,
        &inf.version,
        id.as_deref(),
        parameters,
        &outputs,
    );
    Ok(match json_len {
        Some(n) => (
            [
                ("content-type", "application/octet-stream".to_string()),
                ("inference-header-content-length", n.to_string()),
            ],
            bytes,
        )
            .into_response(),
        None => ([("content-type", "application/json".to_string())], bytes).into_response(),
    })
}
