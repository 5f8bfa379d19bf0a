//! Detection metrics for `tandem-bench detect`: average precision at IoU 0.5 per class (all
//! points of the precision/recall curve, as PASCAL VOC since 2010), its mean over the classes
//! the labels hold, and precision/recall of the boxes as answered.

use std::collections::{BTreeMap, BTreeSet};
use tandem_shared::detect::nms::iou;

/// A labelled box.
#[derive(Debug, Clone)]
pub struct Truth {
    /// Class label.
    pub label: String,
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
}

/// A predicted box.
#[derive(Debug, Clone)]
pub struct Pred {
    /// Class label.
    pub label: String,
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// Confidence.
    pub score: f32,
}

/// Scores over a set of images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Mean over the labelled classes of AP at IoU 0.5.
    pub map50: f64,
    /// Matched predictions / predictions (of labelled classes).
    pub precision: f64,
    /// Matched labels / labels.
    pub recall: f64,
}

/// One labelled class's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassAp {
    /// Class label.
    pub label: String,
    /// Labelled boxes of the class.
    pub boxes: usize,
    /// AP at IoU 0.5.
    pub ap50: f64,
    /// Matched predictions.
    tp: usize,
    /// Predictions of the class.
    preds: usize,
}

/// Evaluates `preds[i]` against `truth[i]` per image. Predictions of classes no label has are
/// left out (the set does not label them).
pub fn evaluate<T: AsRef<[Truth]>, P: AsRef<[Pred]>>(truth: &[T], preds: &[P]) -> Scores {
    let per = per_class(truth, preds);
    let sum = |f: &dyn Fn(&ClassAp) -> usize| per.iter().map(f).sum::<usize>();
    let (tp_all, pred_all, gt_all) = (sum(&|c| c.tp), sum(&|c| c.preds), sum(&|c| c.boxes));
    Scores {
        map50: per.iter().map(|c| c.ap50).sum::<f64>() / per.len().max(1) as f64,
        precision: tp_all as f64 / pred_all.max(1) as f64,
        recall: tp_all as f64 / gt_all.max(1) as f64,
    }
}

/// AP at IoU 0.5 of each class the labels hold, in label order.
pub fn per_class<T: AsRef<[Truth]>, P: AsRef<[Pred]>>(truth: &[T], preds: &[P]) -> Vec<ClassAp> {
    let classes: BTreeSet<&str> = truth
        .iter()
        .flat_map(|t| t.as_ref())
        .map(|t| t.label.as_str())
        .collect();
    let mut out = Vec::new();
    for class in &classes {
        // (score, image, box) of this class, best first.
        let mut dets: Vec<(f32, usize, [f32; 4])> = preds
            .iter()
            .enumerate()
            .flat_map(|(i, ps)| {
                ps.as_ref()
                    .iter()
                    .filter(|p| p.label == *class)
                    .map(move |p| (p.score, i, p.bbox))
            })
            .collect();
        dets.sort_by(|a, b| b.0.total_cmp(&a.0));
        let gts: BTreeMap<usize, Vec<[f32; 4]>> = truth
            .iter()
            .enumerate()
            .map(|(i, ts)| {
                (
                    i,
                    ts.as_ref()
                        .iter()
                        .filter(|t| t.label == *class)
                        .map(|t| t.bbox)
                        .collect(),
                )
            })
            .collect();
        let n_gt: usize = gts.values().map(Vec::len).sum();
        let mut used: BTreeMap<usize, Vec<bool>> = gts
            .iter()
            .map(|(i, v)| (*i, vec![false; v.len()]))
            .collect();
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut curve = Vec::with_capacity(dets.len());
        for (_, img, b) in &dets {
            let boxes = &gts[img];
            let best = boxes
                .iter()
                .enumerate()
                .map(|(j, g)| (j, iou(b, g)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((j, v)) if v >= 0.5 && !used[img][j] => {
                    if let Some(u) = used.get_mut(img) {
                        u[j] = true;
                    }
                    tp += 1;
                }
                _ => fp += 1,
            }
            curve.push((tp as f64 / n_gt.max(1) as f64, tp as f64 / (tp + fp) as f64));
        }
        out.push(ClassAp {
            label: (*class).to_string(),
            boxes: n_gt,
            ap50: average_precision(&curve),
            tp,
            preds: tp + fp,
        });
    }
    out
}

/// Area under a (recall, precision) curve, precision made monotone from the right.
fn average_precision(curve: &[(f64, f64)]) -> f64 {
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (k, (r, _)) in curve.iter().enumerate() {
        let p = curve[k..].iter().map(|c| c.1).fold(0.0, f64::max);
        ap += (r - prev_recall) * p;
        prev_recall = *r;
    }
    ap
}

/// A paired bootstrap of the mAP@0.5 difference `a - b` over images.
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    /// Mean difference over the resamples.
    pub mean: f64,
    /// 5th percentile.
    pub low: f64,
    /// 95th percentile.
    pub high: f64,
    /// Share of resamples where `a` is not better.
    pub share_le_zero: f64,
}

/// mAP@0.5 of `a` minus that of `b` on `n` resamples (with replacement, fixed SplitMix64
/// draws: the same every run) of the images, both judged on the same resampled images.
pub fn paired_bootstrap<T: AsRef<[Truth]>, P: AsRef<[Pred]>>(
    truth: &[T],
    a: &[P],
    b: &[P],
    n: usize,
) -> Bootstrap {
    let len = truth.len().max(1);
    let mut d: Vec<f64> = (0..n as u64)
        .map(|r| {
            let idx: Vec<usize> = (0..len as u64)
                .map(|i| (crate::detect_fit::splitmix((r << 32) ^ i) % len as u64) as usize)
                .collect();
            let t: Vec<&[Truth]> = idx.iter().map(|&i| truth[i].as_ref()).collect();
            let pa: Vec<&[Pred]> = idx.iter().map(|&i| a[i].as_ref()).collect();
            let pb: Vec<&[Pred]> = idx.iter().map(|&i| b[i].as_ref()).collect();
            evaluate(&t, &pa).map50 - evaluate(&t, &pb).map50
        })
        .collect();
    d.sort_by(f64::total_cmp);
    let at = |q: f64| {
        d.get(((d.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    Bootstrap {
        mean: d.iter().sum::<f64>() / d.len().max(1) as f64,
        low: at(0.05).unwrap_or(f64::NAN),
        high: at(0.95).unwrap_or(f64::NAN),
        share_le_zero: d.iter().filter(|x| **x <= 0.0).count() as f64 / d.len().max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(label: &str, b: [f32; 4]) -> Truth {
        Truth {
            label: label.into(),
            bbox: b,
        }
    }
    fn p(label: &str, b: [f32; 4], score: f32) -> Pred {
        Pred {
            label: label.into(),
            bbox: b,
            score,
        }
    }

    #[test]
    fn perfect_half_and_unlabelled_classes() {
        let truth = vec![vec![
            t("a", [0.0, 0.0, 10.0, 10.0]),
            t("b", [20.0, 20.0, 30.0, 30.0]),
        ]];
        let all = vec![vec![
            p("a", [0.0, 0.0, 10.0, 10.0], 0.9),
            p("b", [20.0, 20.0, 30.0, 31.0], 0.8),
            p("zebra", [0.0, 0.0, 5.0, 5.0], 0.99),
        ]];
        let s = evaluate(&truth, &all);
        assert_eq!((s.map50, s.precision, s.recall), (1.0, 1.0, 1.0));
        // A false positive ranked above the one true box of `a`: AP(a) = 0.5.
        let fp_first = vec![vec![
            p("a", [50.0, 50.0, 60.0, 60.0], 0.95),
            p("a", [0.0, 0.0, 10.0, 10.0], 0.9),
        ]];
        let s = evaluate(&truth, &fp_first);
        assert!((s.map50 - 0.25).abs() < 1e-9, "{s:?}"); // (0.5 + 0) / 2
        assert_eq!((s.precision, s.recall), (0.5, 0.5));
        let per: Vec<(String, usize, f64)> = per_class(&truth, &fp_first)
            .into_iter()
            .map(|c| (c.label, c.boxes, c.ap50))
            .collect();
        assert_eq!(per, vec![("a".into(), 1, 0.5), ("b".into(), 1, 0.0)]);
    }

    #[test]
    fn paired_bootstrap_sees_which_is_better() {
        let truth: Vec<Vec<Truth>> = (0..12)
            .map(|i| {
                vec![t(
                    if i % 2 == 0 { "a" } else { "b" },
                    [0.0, 0.0, 10.0, 10.0],
                )]
            })
            .collect();
        // `good` finds every box, `half` only those of class a.
        let good: Vec<Vec<Pred>> = truth
            .iter()
            .map(|ts| vec![p(&ts[0].label, ts[0].bbox, 0.9)])
            .collect();
        let half: Vec<Vec<Pred>> = truth
            .iter()
            .map(|ts| match ts[0].label.as_str() {
                "a" => vec![p("a", ts[0].bbox, 0.9)],
                _ => vec![],
            })
            .collect();
        let d = paired_bootstrap(&truth, &good, &half, 200);
        assert!(d.low > 0.0 && d.share_le_zero == 0.0, "{d:?}");
        assert!((d.mean - 0.5).abs() < 0.1, "{d:?}");
        let same = paired_bootstrap(&truth, &good, &good, 50);
        assert_eq!(
            (same.mean, same.low, same.high, same.share_le_zero),
            (0.0, 0.0, 0.0, 1.0)
        );
    }
}
