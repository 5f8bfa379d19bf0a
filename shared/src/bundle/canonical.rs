//! Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings escaped as
//! `serde_json` escapes them, numbers as `serde_json` prints them (integers in decimal, other
//! numbers as the shortest text that reads back as the same `f64`).
//!
//! The hub writes `bundle.json` in this form, so one content always gives the same bytes (and
//! the same sha256, which the registry compares). The signature covers the bytes of the file
//! as written, not a re-serialisation: a verifier never needs to canonicalise again, and a
//! float that parses one ULP off on another build cannot break a valid signature.

use serde_json::Value;

/// The canonical bytes of a JSON value.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            let text = if let Some(u) = n.as_u64() {
                u.to_string()
            } else if let Some(i) = n.as_i64() {
                i.to_string()
            } else {
                // Finite by construction: JSON has no NaN or infinity.
                let f = n.as_f64().unwrap_or(0.0);
                serde_json::Number::from_f64(f).map_or_else(|| "0".into(), |n| n.to_string())
            };
            out.extend_from_slice(text.as_bytes());
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here, whatever order the map keeps (serde_json's `preserve_order`).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is fixed (`"`, `\`, control characters) and cannot fail.
    match serde_json::to_string(s) {
        Ok(quoted) => out.extend_from_slice(quoted.as_bytes()),
        Err(_) => out.extend_from_slice(b"\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::to_vec;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": [1, 2.5, -3], "a": {"z": null, "é": "x\"y\n", "A": true}});
        assert_eq!(
            String::from_utf8(to_vec(&v)).expect("utf-8"),
            r#"{"a":{"A":true,"z":null,"é":"x\"y\n"},"b":[1,2.5,-3]}"#
        );
    }

    #[test]
    fn reads_back_to_the_same_bytes() {
        let v =
            json!({"scale": 0.00392156862745098_f64, "mean": [0.286], "n": 24058, "big": 1e300});
        let once = to_vec(&v);
        let again: serde_json::Value = serde_json::from_slice(&once).expect("valid JSON");
        assert_eq!(to_vec(&again), once);
    }
}
