//! The operator's review: after a feedback phase, a stated share of the examples the hub
//! holds gets its true label through the console's correction path
//! (`POST /v1/feedback/corrections` with the example's record, as the gallery posts it), as an
//! operator reviewing a share of the feedback would (Frigate+ style). Which examples: those
//! whose digest hashes below the share, so the choice does not depend on the split, the route
//! or whether either model was right; each example is considered once.

use super::rig::Rig;
use super::stream::Item;
use anyhow::{Context as _, bail};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// The operator, what it knows and what it has looked at.
pub struct Reviewer {
    /// Share of examples reviewed, in [0, 1].
    share: f64,
    /// True class label by input digest (hex).
    truth: HashMap<String, String>,
    /// Examples already considered.
    seen: HashSet<String>,
    /// Corrections posted so far.
    pub corrected: u64,
}

/// Whether the example with this digest is in the reviewed share.
fn picked(digest: &str, share: f64) -> bool {
    let h = Sha256::digest(format!("tandem-bench-loop-review/{digest}").as_bytes());
    let x = u64::from_be_bytes(h[..8].try_into().expect("a SHA-256 has 8 bytes"));
    (x as f64) < share * u64::MAX as f64
}

impl Reviewer {
    /// A reviewer of `share` of the examples of `items` (the whole stream) with `labels`.
    pub fn new(share: f64, items: &[Item], labels: &[String]) -> Reviewer {
        let truth = items
            .iter()
            .map(|it| {
                (
                    hex::encode(Sha256::digest(&it.body)),
                    labels.get(it.truth).cloned().unwrap_or_default(),
                )
            })
            .collect();
        Reviewer {
            share,
            truth,
            seen: HashSet::new(),
            corrected: 0,
        }
    }

    /// Reviews the examples of the model at the hub it has not seen yet; the corrections
    /// posted now.
    pub async fn review(&mut self, rig: &Rig) -> anyhow::Result<u64> {
        let mut todo = Vec::new();
        for e in rig.examples().await? {
            let digest = e["digest"].as_str().context("an example without digest")?;
            if !self.seen.insert(digest.to_string()) || !picked(digest, self.share) {
                continue;
            }
            let Some(label) = self.truth.get(digest) else {
                bail!("example {digest} is not an input the benchmark sent");
            };
            let record = e["records"][0]
                .as_str()
                .context("an example without a record")?;
            todo.push((record.to_string(), label.clone()));
        }
        for (record, label) in &todo {
            let (status, v) = rig
                .hub_post(
                    "/v1/feedback/corrections",
                    &json!({"record": record, "label": label}),
                )
                .await?;
            if !(200..300).contains(&status) {
                bail!("correction of {record}: {status}: {v}");
            }
        }
        self.corrected += todo.len() as u64;
        Ok(todo.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_picked_is_the_share_asked() {
        let digests: Vec<String> = (0..20_000u32)
            .map(|i| hex::encode(Sha256::digest(i.to_be_bytes())))
            .collect();
        for share in [0.0, 0.15, 0.5, 1.0] {
            let n = digests.iter().filter(|d| picked(d, share)).count();
            let got = n as f64 / digests.len() as f64;
            assert!((got - share).abs() < 0.01, "{share}: {got}");
        }
    }
}
