//! The ranges of command arguments, checked where a command is decoded (the agent) and before
//! one is sent (the hub), so both sides refuse the same values with the same words.
//!
//! - A threshold is a finite number in its signal's range: `max_prob` and `margin` in [0, 1],
//!   `entropy` (nats) in [0, [`MAX_ENTROPY_NATS`]]. Without a signal it must fit every signal,
//!   [0, 1]: a larger value is only meaningful for entropy, which the command must then name.
//! - A model name is 1-[`MAX_MODEL_NAME_BYTES`] lowercase letters, digits and `-` (the rule of
//!   the manifest's `name`), so it can never be a path or a topic level of its own.
//! - A version is a [`ModelVersion`]: 1 to 8 dot-separated decimal numbers.

use crate::bundle::ModelVersion;
use crate::manifest::Signal;

/// Largest entropy threshold, in nats: the entropy of a K-class distribution is at most ln K,
/// and ln K stays under 16 for every K up to 8.8 million classes.
pub const MAX_ENTROPY_NATS: f32 = 16.0;

/// Longest model name in a command, in bytes.
pub const MAX_MODEL_NAME_BYTES: usize = 64;

/// A command argument out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArgError {
    /// A threshold that is not a finite number in its signal's range.
    #[error("threshold {value} is out of range: {signal} thresholds are in [{min}, {max}]{hint}")]
    Threshold {
        /// The value sent.
        value: f32,
        /// The signal it was checked against (`any signal` when none was named).
        signal: &'static str,
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
        /// What to do instead, when there is something to say.
        hint: &'static str,
    },
    /// A model name outside the naming rule.
    #[error(
        "model `{0}` is not a model name (1-{MAX_MODEL_NAME_BYTES} lowercase letters, digits and `-`)"
    )]
    ModelName(String),
    /// A version that is not dotted decimal numbers.
    #[error("version `{0}` is not a model version (1 to 8 dot-separated decimal numbers)")]
    Version(String),
    /// `set_threshold` with `source: manifest` (a device reports it, nobody sets it).
    #[error(
        "a threshold's source is `hub-calibrated` or `operator` (`manifest` is reported, not set)"
    )]
    Source,
}

/// The range of thresholds for `signal`.
pub fn threshold_range(signal: Signal) -> (f32, f32) {
    match signal {
        Signal::MaxProb | Signal::Margin => (0.0, 1.0),
        Signal::Entropy => (0.0, MAX_ENTROPY_NATS),
    }
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::MaxProb => "max_prob",
        Signal::Margin => "margin",
        Signal::Entropy => "entropy",
    }
}

/// Checks a threshold against `signal`'s range, or against [0, 1] when no signal is named.
pub fn check_threshold(signal: Option<Signal>, value: f32) -> Result<(), ArgError> {
    let (min, max) = signal.map_or((0.0, 1.0), threshold_range);
    if value.is_finite() && (min..=max).contains(&value) {
        return Ok(());
    }
    let hint = match signal {
        None if value.is_finite() && value > 1.0 && value <= MAX_ENTROPY_NATS => {
            " (a larger value is an entropy threshold: name `\"signal\": \"entropy\"`)"
        }
        _ => "",
    };
    Err(ArgError::Threshold {
        value,
        signal: signal.map_or("any signal's", signal_name),
        min,
        max,
        hint,
    })
}

/// Whether `name` follows the model naming rule.
pub fn valid_model_name(name: &str) -> bool {
    (1..=MAX_MODEL_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Checks a model name.
pub fn check_model_name(name: &str) -> Result<(), ArgError> {
    if valid_model_name(name) {
        Ok(())
    } else {
        Err(ArgError::ModelName(name.chars().take(80).collect()))
    }
}

/// Checks a model version.
pub fn check_version(version: &str) -> Result<(), ArgError> {
    match ModelVersion::parse(version) {
        Some(_) => Ok(()),
        None => Err(ArgError::Version(version.chars().take(80).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_in_their_signals_range() {
        for (signal, good, bad) in [
            (Some(Signal::MaxProb), [0.0, 0.5, 1.0], [1.01, -0.01, 5.0]),
            (Some(Signal::Margin), [0.0, 0.2, 1.0], [1.5, -1.0, 100.0]),
            (Some(Signal::Entropy), [0.0, 2.3, 16.0], [16.5, -0.1, 1e30]),
            (None, [0.0, 0.7, 1.0], [5.0, -0.5, 1.0001]),
        ] {
            for v in good {
                assert_eq!(check_threshold(signal, v), Ok(()), "{signal:?} {v}");
            }
            for v in bad {
                assert!(check_threshold(signal, v).is_err(), "{signal:?} {v}");
            }
            for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                assert!(check_threshold(signal, v).is_err(), "{signal:?} {v}");
            }
        }
        let e = check_threshold(None, 5.0).expect_err("5 without a signal");
        assert!(e.to_string().contains("entropy"), "{e}");
        let e = check_threshold(Some(Signal::MaxProb), 5.0).expect_err("5 as max_prob");
        assert!(
            e.to_string().contains("max_prob thresholds are in [0, 1]"),
            "{e}"
        );
    }

    #[test]
    fn names_and_versions() {
        for ok in ["vision-fashion", "m", "a1-b2"] {
            assert_eq!(check_model_name(ok), Ok(()));
        }
        let long = "a".repeat(MAX_MODEL_NAME_BYTES + 1);
        for bad in [
            "",
            "..",
            "../etc",
            "/abs",
            "Vision",
            "a b",
            "a/b",
            long.as_str(),
        ] {
            assert!(check_model_name(bad).is_err(), "{bad}");
        }
        for ok in ["1", "1.0.1", "20.3"] {
            assert_eq!(check_version(ok), Ok(()));
        }
        for bad in [
            "",
            "..",
            "../../x",
            "1..2",
            "v1",
            "1.0-rc",
            "1.2.3.4.5.6.7.8.9",
        ] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
