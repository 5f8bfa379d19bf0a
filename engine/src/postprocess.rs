//! Post-processing for classification: softmax, top-k, and the routing signals
//! (max probability, margin, entropy): the one decoding of a classifier's output that the
//! engine's workers, the hub (for the `k` an offload asks) and the agent run.

pub use tandem_shared::answer::{ClassScore, ClassSignals, Classification};
use tandem_shared::manifest::{OutputKind, OutputSpec};
use tandem_shared::oip::TensorData;

/// In-place numerically stable softmax.
pub fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    if sum > 0.0 {
        v.iter_mut().for_each(|x| *x /= sum);
    }
}

/// Signals of a probability distribution.
pub fn signals(probs: &[f32]) -> ClassSignals {
    let (mut first, mut second) = (0.0f32, 0.0f32);
    let mut entropy = 0.0f32;
    for &p in probs {
        if p > first {
            second = first;
            first = p;
        } else if p > second {
            second = p;
        }
        if p > 0.0 {
            entropy -= p * p.ln();
        }
    }
    ClassSignals {
        max_prob: first,
        margin: first - second,
        entropy,
    }
}

/// Classifies one row of probabilities. Top-k by a single pass (O(n·k)), no full sort.
pub fn classify(probs: &[f32], labels: &[String], k: usize) -> Classification {
    let k = k.clamp(1, probs.len().max(1));
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, p) in probs.iter().enumerate() {
        if best.len() == k && probs[best[k - 1]] >= *p {
            continue;
        }
        let at = best
            .iter()
            .position(|&j| probs[j] < *p)
            .unwrap_or(best.len());
        best.insert(at, i);
        best.truncate(k);
    }
    let label = |i: usize| {
        labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class_{i}"))
    };
    let top_k: Vec<ClassScore> = best
        .iter()
        .map(|&i| ClassScore {
            index: i,
            label: label(i),
            score: probs[i],
        })
        .collect();
    let first = best.first().copied().unwrap_or(0);
    Classification {
        index: first,
        label: label(first),
        score: probs.get(first).copied().unwrap_or(0.0),
        top_k,
        signals: signals(probs),
    }
}

/// The classification of every row of a classifier's first output (`spec`), with the `k` best
/// classes each: softmax first when the output is logits. Empty when the output is not F32.
pub fn classify_rows(
    spec: &OutputSpec,
    shape: &[i64],
    data: &TensorData,
    labels: &[String],
    k: usize,
) -> Vec<Classification> {
    let TensorData::F32(d) = data else {
        return Vec::new();
    };
    let rows = shape.first().copied().unwrap_or(1).max(1) as usize;
    let per = d.len() / rows;
    d.chunks_exact(per.max(1))
        .map(|row| {
            if spec.kind != OutputKind::Logits {
                return classify(row, labels, k);
            }
            // The probabilities in this thread's scratch: no allocation per request.
            let mut probs = crate::preprocess::scratch::floats(row.len());
            probs.copy_from_slice(row);
            softmax(&mut probs);
            let c = classify(&probs, labels, k);
            crate::preprocess::scratch::give_floats(probs);
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut v = [1.0, 3.0, 2.0, 1000.0];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[3] > 0.999);
    }

    #[test]
    fn signals_of_certain_and_uniform() {
        let s = signals(&[1.0, 0.0, 0.0]);
        assert_eq!((s.max_prob, s.margin, s.entropy), (1.0, 1.0, 0.0));
        let u = signals(&[0.25; 4]);
        assert_eq!(u.margin, 0.0);
        assert!((u.entropy - 4f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn top_k_is_sorted_and_labelled() {
        let labels = vec!["a".to_string(), "b".into(), "c".into()];
        let p = classify(&[0.2, 0.5, 0.3], &labels, 2);
        assert_eq!(p.label, "b");
        assert_eq!(
            p.top_k.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!((p.signals.margin - 0.2).abs() < 1e-6);
    }

    #[test]
    fn top_k_agrees_with_a_full_sort() {
        let probs: Vec<f32> = (0..1000u32)
            .map(|i| ((i * 7919) % 1009) as f32 / 1009.0)
            .collect();
        let p = classify(&probs, &[], 5);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b)));
        assert_eq!(
            p.top_k.iter().map(|s| s.index).collect::<Vec<_>>(),
            order[..5].to_vec()
        );
        assert_eq!(p.label, format!("class_{}", order[0]));
    }

    /// Ties (many equal scores, as quantised models give) come out as a stable full sort
    /// orders them: higher score first, then the lower index; for every k.
    #[test]
    fn top_k_with_ties_agrees_with_a_stable_full_sort() {
        let probs: Vec<f32> = (0..1000u32)
            .map(|i| ((i * 37) % 11) as f32 / 16.0)
            .collect();
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b)));
        for k in [1, 2, 5, 91, 92, 1000] {
            let p = classify(&probs, &[], k);
            let got: Vec<usize> = p.top_k.iter().map(|s| s.index).collect();
            assert_eq!(got, order[..k].to_vec(), "k = {k}");
            assert!(p.top_k.iter().all(|s| s.score == probs[s.index]));
        }
    }
}
