//! Self-tests of a staged version, on the sessions that will serve: every case of the device's
//! variant must give its expected top-1 class with a score within its tolerance, and the p99
//! latency over `runs` runs of each input must stay within the budget.

use super::error::InstallError;
use bytes::Bytes;
use std::path::Path;
use std::time::Instant;
use tandem_engine::Input;
use tandem_engine::swap::Staged;
use tandem_shared::bundle::SelfTest;
use tandem_shared::manifest::VariantRole;

/// What the self-tests measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfTestReport {
    /// Cases checked.
    pub cases: usize,
    /// Inferences run (cases × runs).
    pub runs: usize,
    /// p99 latency over those runs, in milliseconds.
    pub p99_ms: f64,
}

/// Runs the self-tests of `role` on a staged version whose files are in `dir`.
pub fn run(
    staged: &Staged,
    dir: &Path,
    tests: &[SelfTest],
    role: VariantRole,
    runs: usize,
    budget_ms: u64,
) -> Result<SelfTestReport, InstallError> {
    let mut latencies_ms = Vec::new();
    let mut cases = 0;
    for (index, t) in tests.iter().enumerate().filter(|(_, t)| t.variant == role) {
        let (input, shown) = match (&t.input, &t.text) {
            (Some(file), _) => {
                let path = dir.join(file);
                let bytes = std::fs::read(&path).map_err(super::error::io(&path))?;
                (Input::Images(vec![Bytes::from(bytes)]), file.clone())
            }
            (None, Some(text)) => (
                Input::Texts(vec![text.clone()]),
                text.chars().take(40).collect(),
            ),
            (None, None) => (Input::Texts(Vec::new()), String::new()),
        };
        let fail = |message: String| InstallError::SelfTest {
            index,
            input: shown.clone(),
            message,
        };
        for run in 0..runs.max(1) {
            let started = Instant::now();
            let answer = staged
                .infer_blocking(input.clone())
                .map_err(|e| fail(e.to_string()))?;
            latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            if run > 0 {
                continue;
            }
            let p = answer
                .predictions
                .first()
                .ok_or_else(|| fail("no prediction".into()))?;
            if p.index != t.top1_index {
                return Err(fail(format!(
                    "top-1 is class {} `{}` ({:.4}), expected {} `{}`",
                    p.index, p.label, p.score, t.top1_index, t.top1
                )));
            }
            let diff = (f64::from(p.score) - t.score).abs();
            if diff > t.tolerance {
                return Err(fail(format!(
                    "score {:.4}, expected {:.4} ± {}",
                    p.score, t.score, t.tolerance
                )));
            }
        }
        cases += 1;
    }
    let p99_ms = p99(&mut latencies_ms);
    if p99_ms > budget_ms as f64 {
        return Err(InstallError::Latency { p99_ms, budget_ms });
    }
    Ok(SelfTestReport {
        cases,
        runs: latencies_ms.len(),
        p99_ms,
    })
}

fn p99(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64) * 0.99).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn p99_is_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(super::p99(&mut v), 198.0);
        assert_eq!(super::p99(&mut [5.0]), 5.0);
        assert_eq!(super::p99(&mut []), 0.0);
    }
}
