//! The protobuf wire format, as far as editing an ONNX file needs it: a message split into
//! its fields (each kept as its exact bytes, so whatever is not edited is written back
//! unchanged, unknown fields included) and the encoders for the few messages the trainer
//! writes. Pure: no IO.

use super::TrainError;

/// Wire type of a varint field.
pub const VARINT: u8 = 0;
/// Wire type of a length-delimited field (messages, strings, bytes, packed numbers).
pub const LEN: u8 = 2;

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// Field number.
    pub number: u32,
    /// Wire type.
    pub wire: u8,
    /// The whole field as encoded (tag included): what a copy writes back.
    pub raw: &'a [u8],
    /// The value: a varint's value, or 0 for other wire types.
    pub varint: u64,
    /// The payload of a length-delimited field (empty for other wire types).
    pub payload: &'a [u8],
}

fn malformed(what: &str) -> TrainError {
    TrainError::Onnx(format!("malformed protobuf: {what}"))
}

fn read_varint(buf: &[u8], at: &mut usize) -> Result<u64, TrainError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or_else(|| malformed("truncated varint"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

/// The fields of the message `buf`, in order.
pub fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, TrainError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let tag = read_varint(buf, &mut at)?;
        let number = u32::try_from(tag >> 3).map_err(|_| malformed("field number"))?;
        let wire = (tag & 7) as u8;
        let (mut varint, mut payload): (u64, &[u8]) = (0, &[]);
        match wire {
            VARINT => varint = read_varint(buf, &mut at)?,
            1 => at += 8,
            LEN => {
                let len =
                    usize::try_from(read_varint(buf, &mut at)?).map_err(|_| malformed("length"))?;
                let end = at.checked_add(len).ok_or_else(|| malformed("length"))?;
                payload = buf
                    .get(at..end)
                    .ok_or_else(|| malformed("truncated field"))?;
                at = end;
            }
            5 => at += 4,
            other => return Err(malformed(&format!("wire type {other}"))),
        }
        let raw = buf
            .get(start..at)
            .ok_or_else(|| malformed("truncated field"))?;
        out.push(Field {
            number,
            wire,
            raw,
            varint,
            payload,
        });
    }
    Ok(out)
}

/// The strings (UTF-8, lossy) of the repeated string field `number` of `buf`'s fields.
pub fn strings(fs: &[Field<'_>], number: u32) -> Vec<String> {
    fs.iter()
        .filter(|f| f.number == number && f.wire == LEN)
        .map(|f| String::from_utf8_lossy(f.payload).into_owned())
        .collect()
}

/// The first string field `number`, or "".
pub fn string(fs: &[Field<'_>], number: u32) -> String {
    strings(fs, number).into_iter().next().unwrap_or_default()
}

/// The int64 values of the repeated field `number` (packed or not).
pub fn ints(fs: &[Field<'_>], number: u32) -> Result<Vec<i64>, TrainError> {
    let mut out = Vec::new();
    for f in fs.iter().filter(|f| f.number == number) {
        match f.wire {
            VARINT => out.push(f.varint as i64),
            LEN => {
                let mut at = 0;
                while at < f.payload.len() {
                    out.push(read_varint(f.payload, &mut at)? as i64);
                }
            }
            _ => return Err(malformed("an integer field of another wire type")),
        }
    }
    Ok(out)
}

/// The float values of the repeated field `number` (packed or not).
pub fn floats(fs: &[Field<'_>], number: u32) -> Vec<f32> {
    let mut out = Vec::new();
    for f in fs.iter().filter(|f| f.number == number) {
        match f.wire {
            5 => out.push(f32::from_le_bytes(
                f.raw[f.raw.len() - 4..].try_into().unwrap_or([0; 4]),
            )),
            LEN => out.extend(
                f.payload
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            _ => {}
        }
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field.
pub fn put_bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(LEN));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Appends a varint field.
pub fn put_int(out: &mut Vec<u8>, number: u32, v: i64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v as u64);
}

/// A `TensorProto` of FP32 values (dims, data_type FLOAT, name, raw_data little-endian).
pub fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for d in dims {
        put_int(&mut t, 1, *d as i64);
    }
    put_int(&mut t, 2, 1);
    put_bytes(&mut t, 8, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put_bytes(&mut t, 9, &raw);
    t
}

/// A `NodeProto`; `attrs` are INT attributes (name, value).
pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: &[(&str, i64)],
) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        put_bytes(&mut n, 1, i.as_bytes());
    }
    for o in outputs {
        put_bytes(&mut n, 2, o.as_bytes());
    }
    put_bytes(&mut n, 3, name.as_bytes());
    put_bytes(&mut n, 4, op.as_bytes());
    for (k, v) in attrs {
        let mut a = Vec::new();
        put_bytes(&mut a, 1, k.as_bytes());
        put_int(&mut a, 3, *v);
        put_int(&mut a, 20, 2); // AttributeType INT
        put_bytes(&mut n, 5, &a);
    }
    n
}

/// `node` with INTS attributes (name, values) added.
pub fn node_ints(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: &[(&str, &[i64])],
) -> Vec<u8> {
    let mut n = node(op, name, inputs, outputs, &[]);
    for (k, vs) in attrs {
        let mut a = Vec::new();
        put_bytes(&mut a, 1, k.as_bytes());
        for v in *vs {
            put_int(&mut a, 8, *v);
        }
        put_int(&mut a, 20, 7); // AttributeType INTS
        put_bytes(&mut n, 5, &a);
    }
    n
}

/// A `ValueInfoProto` for an FP32 tensor of rank 2 (`[batch, width]`).
pub fn float_value_info(name: &str, width: Option<usize>) -> Vec<u8> {
    let mut shape = Vec::new();
    let mut batch = Vec::new();
    put_bytes(&mut batch, 2, b"batch");
    put_bytes(&mut shape, 1, &batch);
    let mut d = Vec::new();
    match width {
        Some(w) => put_int(&mut d, 1, w as i64),
        None => put_bytes(&mut d, 2, b"width"),
    }
    put_bytes(&mut shape, 1, &d);
    let mut tensor = Vec::new();
    put_int(&mut tensor, 1, 1);
    put_bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    put_bytes(&mut ty, 1, &tensor);
    let mut v = Vec::new();
    put_bytes(&mut v, 1, name.as_bytes());
    put_bytes(&mut v, 2, &ty);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_read_back() {
        let t = float_tensor("w", &[2, 3], &[1.0, -2.5, 3.0, 0.0, 1e-3, 7.0]);
        let fs = fields(&t).expect("own encoding parses");
        assert_eq!(ints(&fs, 1).expect("dims"), vec![2, 3]);
        assert_eq!(ints(&fs, 2).expect("type"), vec![1]);
        assert_eq!(string(&fs, 8), "w");
        let raw = fs.iter().find(|f| f.number == 9).expect("raw_data");
        assert_eq!(raw.payload.len(), 24);
        let copy: Vec<u8> = fs.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(copy, t, "fields keep their exact bytes");
        let n = node("Softmax", "s", &["a"], &["b"], &[("axis", -1)]);
        let fs = fields(&n).expect("node parses");
        assert_eq!(strings(&fs, 1), vec!["a"]);
        assert_eq!(string(&fs, 4), "Softmax");
        let attr = fields(fs.iter().find(|f| f.number == 5).expect("attr").payload).expect("attr");
        assert_eq!(ints(&attr, 3).expect("i"), vec![-1]);
        assert!(
            fields(&[0x0a, 0x05, 0x01]).is_err(),
            "a truncated field is refused"
        );
        assert!(fields(&[0x80; 11]).is_err(), "an endless varint is refused");
    }
}
