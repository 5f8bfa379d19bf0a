//! Train / calibration / test splits by input: an input's split is a function of its content
//! digest alone (sha256 of a fixed salt and the digest, first 8 bytes mod 100, against
//! `feedback.split_train_pct` and `split_calibration_pct`), so every copy of one input lands in
//! the same split, the splits never share an input, and the assignment never changes as
//! records arrive or are evicted. Pure: no IO.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Salt of the split hash: changing it reshuffles every split (never do it under a trained
/// model).
const SALT: &[u8] = b"tandem-split/1";

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Fitting (retraining a head).
    Train,
    /// Fitting thresholds and calibration.
    Calibration,
    /// Judging only (evaluation, the promotion gate).
    Test,
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "train" => Ok(Self::Train),
            "calibration" => Ok(Self::Calibration),
            "test" => Ok(Self::Test),
            other => Err(format!(
                "unknown split `{other}` (train, calibration or test)"
            )),
        }
    }
}

impl Split {
    /// The name in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Calibration => "calibration",
            Self::Test => "test",
        }
    }

    /// The split of the input whose sha256 is `digest`.
    pub fn of(digest: &[u8; 32], train_pct: u64, calibration_pct: u64) -> Self {
        let h = Sha256::new()
            .chain_update(SALT)
            .chain_update(digest)
            .finalize();
        let bucket = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8])) % 100;
        if bucket < train_pct {
            Self::Train
        } else if bucket < train_pct + calibration_pct {
            Self::Calibration
        } else {
            Self::Test
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_percentages_and_one_input_has_one_split() {
        let mut counts = std::collections::HashMap::new();
        for i in 0u32..10_000 {
            let d: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
            let s = Split::of(&d, 70, 15);
            assert_eq!(s, Split::of(&d, 70, 15), "deterministic");
            *counts.entry(s).or_insert(0u32) += 1;
        }
        let share = |s| f64::from(counts[&s]) / 10_000.0;
        assert!((share(Split::Train) - 0.70).abs() < 0.02, "{counts:?}");
        assert!(
            (share(Split::Calibration) - 0.15).abs() < 0.02,
            "{counts:?}"
        );
        assert!((share(Split::Test) - 0.15).abs() < 0.02, "{counts:?}");
        let d = [7u8; 32];
        assert_eq!(Split::of(&d, 100, 0), Split::Train);
        assert_eq!(Split::of(&d, 0, 0), Split::Test);
        assert_eq!("calibration".parse(), Ok(Split::Calibration));
        assert!("validation".parse::<Split>().is_err());
    }
}
