//! Payload layouts: each [`Message`] to and from the bytes after the frame header
//! (docs/wire.md, "Messages", is the byte-by-byte reference). Encoding and decoding check the
//! same limits, so whatever encodes also decodes, to an equal value.

use super::buf::{Reader, Writer};
use super::message::{BundleFile, DType, ErrorCode, Kind, Message, Tensor, Timing};
use super::predict::{
    check_top_k, read_flag, read_input, read_prediction, write_flag, write_input, write_prediction,
};
use super::{
    MAX_BUNDLE_FILES, MAX_ERROR_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_RANK,
    MAX_TENSORS, WireError,
};

/// Appends `msg`'s payload (no header) to `out`. On error `out` may hold a partial payload;
/// [`crate::wire::encode_frame`] truncates it away.
pub(crate) fn encode_payload(msg: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    let mut w = Writer { out };
    match msg {
        Message::InferRequest {
            request_id,
            model,
            model_version,
            deadline_ms,
            input,
        } => {
            w.u64(*request_id);
            w.str16("model", model, MAX_NAME_BYTES)?;
            w.opt_str16("model_version", model_version.as_deref(), MAX_NAME_BYTES)?;
            w.u32(*deadline_ms);
            write_input(&mut w, input)?;
        }
        Message::PredictRequest {
            request_id,
            model,
            model_version,
            deadline_ms,
            top_k,
            raw_outputs,
            input,
        } => {
            w.u64(*request_id);
            w.str16("model", model, MAX_NAME_BYTES)?;
            w.opt_str16("model_version", model_version.as_deref(), MAX_NAME_BYTES)?;
            w.u32(*deadline_ms);
            w.u16(check_top_k(*top_k)?);
            write_flag(&mut w, *raw_outputs);
            write_input(&mut w, input)?;
        }
        Message::PredictResponse {
            request_id,
            model,
            model_version,
            timing,
            prediction,
            outputs,
        } => {
            w.u64(*request_id);
            w.str16("model", model, MAX_NAME_BYTES)?;
            w.str16("model_version", model_version, MAX_NAME_BYTES)?;
            write_timing(&mut w, timing);
            write_prediction(&mut w, prediction)?;
            write_tensors(&mut w, outputs)?;
        }
        Message::InferResponse {
            request_id,
            model,
            model_version,
            outputs,
            timing,
        } => {
            w.u64(*request_id);
            w.str16("model", model, MAX_NAME_BYTES)?;
            w.str16("model_version", model_version, MAX_NAME_BYTES)?;
            write_timing(&mut w, timing);
            write_tensors(&mut w, outputs)?;
        }
        Message::Busy {
            request_id,
            retry_after_ms,
        } => {
            w.u64(*request_id);
            w.u32(*retry_after_ms);
        }
        Message::Error {
            request_id,
            code,
            message,
        } => {
            w.u64(*request_id);
            w.u16(code.to_u16());
            w.str16("message", message, MAX_ERROR_MESSAGE_BYTES)?;
        }
        Message::Ping { nonce } | Message::Pong { nonce } => w.u64(*nonce),
        Message::Deliver {
            epoch,
            seq,
            payload,
        } => {
            w.u64(*epoch);
            w.u64(*seq);
            w.bytes32(payload)?;
        }
        Message::Ack { epoch, seq } => {
            w.u64(*epoch);
            w.u64(*seq);
        }
        Message::BundleRequest { model, version } => {
            w.str16("model", model, MAX_NAME_BYTES)?;
            w.str16("version", version, MAX_NAME_BYTES)?;
        }
        Message::BundleOffer {
            model,
            version,
            digest,
            files,
        } => {
            w.str16("model", model, MAX_NAME_BYTES)?;
            w.str16("version", version, MAX_NAME_BYTES)?;
            w.str16("digest", digest, MAX_NAME_BYTES)?;
            check_files(files.len())?;
            w.u16(files.len() as u16); // MAX_BUNDLE_FILES < u16::MAX, checked above
            for f in files {
                w.str16("file.path", &f.path, MAX_PATH_BYTES)?;
                w.u64(f.size);
            }
        }
        Message::ChunkRequest {
            model,
            version,
            path,
            offset,
            len,
        } => {
            w.str16("model", model, MAX_NAME_BYTES)?;
            w.str16("version", version, MAX_NAME_BYTES)?;
            w.str16("path", path, MAX_PATH_BYTES)?;
            w.u64(*offset);
            w.u64(*len);
        }
        Message::Chunk { offset, data } => {
            w.u64(*offset);
            w.bytes32(data)?;
        }
        Message::Enrol { token, name, csr } => {
            w.str16("token", token, MAX_NAME_BYTES)?;
            w.str16("name", name, MAX_NAME_BYTES)?;
            w.bytes32(csr)?;
        }
        Message::Renew { csr } => w.bytes32(csr)?,
        Message::Issued { name, cert } => {
            w.str16("name", name, MAX_NAME_BYTES)?;
            w.bytes32(cert)?;
        }
    }
    Ok(())
}

/// Decodes one payload of frame kind `kind`. Never panics; allocates only what the payload
/// holds (every declared length is checked against the bytes remaining first).
pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<Message, WireError> {
    let kind = Kind::from_u8(kind).ok_or(WireError::UnknownKind(kind))?;
    let mut r = Reader::new(payload);
    let msg = match kind {
        Kind::InferRequest => Message::InferRequest {
            request_id: r.u64("request_id")?,
            model: r.str16("model", MAX_NAME_BYTES)?,
            model_version: r.opt_str16("model_version", MAX_NAME_BYTES)?,
            deadline_ms: r.u32("deadline_ms")?,
            input: read_input(&mut r)?,
        },
        Kind::PredictRequest => Message::PredictRequest {
            request_id: r.u64("request_id")?,
            model: r.str16("model", MAX_NAME_BYTES)?,
            model_version: r.opt_str16("model_version", MAX_NAME_BYTES)?,
            deadline_ms: r.u32("deadline_ms")?,
            top_k: check_top_k(r.u16("top_k")?)?,
            raw_outputs: read_flag(&mut r, "raw_outputs")?,
            input: read_input(&mut r)?,
        },
        Kind::PredictResponse => Message::PredictResponse {
            request_id: r.u64("request_id")?,
            model: r.str16("model", MAX_NAME_BYTES)?,
            model_version: r.str16("model_version", MAX_NAME_BYTES)?,
            timing: read_timing(&mut r)?,
            prediction: read_prediction(&mut r)?,
            outputs: read_tensors(&mut r)?,
        },
        Kind::InferResponse => Message::InferResponse {
            request_id: r.u64("request_id")?,
            model: r.str16("model", MAX_NAME_BYTES)?,
            model_version: r.str16("model_version", MAX_NAME_BYTES)?,
            timing: read_timing(&mut r)?,
            outputs: read_tensors(&mut r)?,
        },
        Kind::Busy => Message::Busy {
            request_id: r.u64("request_id")?,
            retry_after_ms: r.u32("retry_after_ms")?,
        },
        Kind::Error => Message::Error {
            request_id: r.u64("request_id")?,
            code: ErrorCode::from_u16(r.u16("code")?),
            message: r.str16("message", MAX_ERROR_MESSAGE_BYTES)?,
        },
        Kind::Ping => Message::Ping {
            nonce: r.u64("nonce")?,
        },
        Kind::Pong => Message::Pong {
            nonce: r.u64("nonce")?,
        },
        Kind::Deliver => Message::Deliver {
            epoch: r.u64("epoch")?,
            seq: r.u64("seq")?,
            payload: r.bytes32("payload")?,
        },
        Kind::Ack => Message::Ack {
            epoch: r.u64("epoch")?,
            seq: r.u64("seq")?,
        },
        Kind::BundleRequest => Message::BundleRequest {
            model: r.str16("model", MAX_NAME_BYTES)?,
            version: r.str16("version", MAX_NAME_BYTES)?,
        },
        Kind::BundleOffer => Message::BundleOffer {
            model: r.str16("model", MAX_NAME_BYTES)?,
            version: r.str16("version", MAX_NAME_BYTES)?,
            digest: r.str16("digest", MAX_NAME_BYTES)?,
            files: {
                let count = usize::from(r.u16("files.count")?);
                check_files(count)?;
                // Each entry takes at least 10 bytes: no more room is reserved than the payload holds.
                let mut files = Vec::with_capacity(count.min(r.remaining() / 10));
                for _ in 0..count {
                    files.push(BundleFile {
                        path: r.str16("file.path", MAX_PATH_BYTES)?,
                        size: r.u64("file.size")?,
                    });
                }
                files
            },
        },
        Kind::ChunkRequest => Message::ChunkRequest {
            model: r.str16("model", MAX_NAME_BYTES)?,
            version: r.str16("version", MAX_NAME_BYTES)?,
            path: r.str16("path", MAX_PATH_BYTES)?,
            offset: r.u64("offset")?,
            len: r.u64("len")?,
        },
        Kind::Chunk => Message::Chunk {
            offset: r.u64("offset")?,
            data: r.bytes32("data")?,
        },
        Kind::Enrol => Message::Enrol {
            token: r.str16("token", MAX_NAME_BYTES)?,
            name: r.str16("name", MAX_NAME_BYTES)?,
            csr: r.bytes32("csr")?,
        },
        Kind::Renew => Message::Renew {
            csr: r.bytes32("csr")?,
        },
        Kind::Issued => Message::Issued {
            name: r.str16("name", MAX_NAME_BYTES)?,
            cert: r.bytes32("cert")?,
        },
    };
    r.finish()?;
    Ok(msg)
}

/// A response's timing: queue and service microseconds, then the batch size.
fn write_timing(w: &mut Writer<'_>, timing: &Timing) {
    w.u32(timing.queue_us);
    w.u32(timing.service_us);
    w.u32(timing.batch_size);
}

fn read_timing(r: &mut Reader<'_>) -> Result<Timing, WireError> {
    Ok(Timing {
        queue_us: r.u32("timing.queue_us")?,
        service_us: r.u32("timing.service_us")?,
        batch_size: r.u32("timing.batch_size")?,
    })
}

/// Data bytes a tensor of `dtype` and `shape` must carry, or `InvalidShape`.
fn data_len(name: &str, dtype: DType, shape: &[i64]) -> Result<u64, WireError> {
    let invalid = || WireError::InvalidShape {
        tensor: name.to_owned(),
        shape: shape.to_vec(),
    };
    shape.iter().try_fold(dtype.size(), |acc, d| {
        let d = u64::try_from(*d).map_err(|_| invalid())?;
        acc.checked_mul(d).ok_or_else(invalid)
    })
}

fn check_files(count: usize) -> Result<(), WireError> {
    if count > MAX_BUNDLE_FILES {
        return Err(WireError::TooManyFiles {
            count,
            max: MAX_BUNDLE_FILES,
        });
    }
    Ok(())
}

fn check_count(count: usize) -> Result<(), WireError> {
    if count > MAX_TENSORS {
        return Err(WireError::TooManyTensors {
            count,
            max: MAX_TENSORS,
        });
    }
    Ok(())
}

fn check_rank(name: &str, rank: usize) -> Result<(), WireError> {
    if rank > MAX_RANK {
        return Err(WireError::RankTooLarge {
            tensor: name.to_owned(),
            rank,
            max: MAX_RANK,
        });
    }
    Ok(())
}

pub(super) fn write_tensors(w: &mut Writer<'_>, ts: &[Tensor]) -> Result<(), WireError> {
    check_count(ts.len())?;
    w.u16(ts.len() as u16); // MAX_TENSORS < u16::MAX, checked above
    for t in ts {
        w.str16("tensor.name", &t.name, MAX_NAME_BYTES)?;
        w.u8(t.dtype as u8);
        check_rank(&t.name, t.shape.len())?;
        w.u8(t.shape.len() as u8); // MAX_RANK < u8::MAX, checked above
        for d in &t.shape {
            w.i64(*d);
        }
        let expected = data_len(&t.name, t.dtype, &t.shape)?;
        if expected != t.data.len() as u64 {
            return Err(WireError::ShapeMismatch {
                tensor: t.name.clone(),
                shape: t.shape.clone(),
                expected,
                got: t.data.len() as u64,
            });
        }
        w.bytes32(&t.data)?;
    }
    Ok(())
}

pub(super) fn read_tensors(r: &mut Reader<'_>) -> Result<Vec<Tensor>, WireError> {
    let count = usize::from(r.u16("tensor.count")?);
    check_count(count)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.str16("tensor.name", MAX_NAME_BYTES)?;
        let tag = r.u8("tensor.dtype")?;
        let dtype = DType::from_u8(tag).ok_or(WireError::InvalidTag {
            field: "tensor.dtype",
            got: tag,
        })?;
        let rank = usize::from(r.u8("tensor.rank")?);
        check_rank(&name, rank)?;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.i64("tensor.shape")?);
        }
        let expected = data_len(&name, dtype, &shape)?;
        let got = u64::from(r.u32("tensor.data")?);
        if got != expected {
            return Err(WireError::ShapeMismatch {
                tensor: name,
                shape,
                expected,
                got,
            });
        }
        let data = r.take("tensor.data", got)?.to_vec();
        out.push(Tensor {
            name,
            dtype,
            shape,
            data,
        });
    }
    Ok(out)
}
