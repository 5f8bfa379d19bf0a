//! The Prometheus text format's label sets: every label value any `/metrics` renderer writes
//! goes through [`escape`] (backslash, double quote and line feed, as the format requires), so a
//! device-supplied string (a model name, an outcome) cannot end a value early or start a line.
//!
//! Why an escaper and not a client crate: the daemons' counters are their own structures, read
//! at scrape time and also copied into MQTT telemetry (one set of numbers); a registry of the
//! crate's metric types would be a second copy of them. The format's only rule for label values
//! is this escaping; metric and label names are static strings in the code.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `v` as a label value may hold it: `\` as `\\`, `"` as `\"`, a line feed as `\n` (the text
/// format's three escapes). Borrowed when nothing needs escaping.
pub fn escape(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `{k1="v1",k2="v2"}` with every value escaped; `""` for no labels.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    write_labels(&mut out, pairs);
    out
}

/// Appends [`labels`] of `pairs` to `out`.
pub fn write_labels(out: &mut String, pairs: &[(&str, &str)]) {
    if pairs.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out.push('}');
}

/// Appends one sample line: `name{labels} value`.
pub fn write_sample(
    out: &mut String,
    name: &str,
    pairs: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    write_labels(out, pairs);
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_three_characters_and_nothing_else() {
        assert!(matches!(
            escape("resnet-50 ü"),
            Cow::Borrowed("resnet-50 ü")
        ));
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape("\r\t"), "\r\t");
    }

    #[test]
    fn label_sets() {
        assert_eq!(labels(&[]), "");
        assert_eq!(
            labels(&[("model", "x\"y"), ("outcome", "ok")]),
            "{model=\"x\\\"y\",outcome=\"ok\"}"
        );
        let mut out = String::new();
        write_sample(&mut out, "m_total", &[("k", "a\nb")], 3);
        assert_eq!(out, "m_total{k=\"a\\nb\"} 3\n");
    }
}
