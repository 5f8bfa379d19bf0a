//! Fitting a linear classifier head (softmax regression) in plain Rust: features standardised
//! (folded back into the weights on export), warm-started from the serving head and pulled
//! toward it, weights and bias alike, by an L2 term (so a few hundred examples adapt the head
//! rather than replace what it knew; the limit of a strong pull is the serving head itself), full-batch gradient descent with a backtracking line search. Deterministic:
//! no sampling, so one set always gives the same head. Pure: no IO.

use super::TrainError;
use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// A linear head: `logits = x · weights + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    /// Feature width.
    pub dim: usize,
    /// Classes.
    pub classes: usize,
    /// Row-major `[dim][classes]`.
    pub weights: Vec<f32>,
    /// One per class.
    pub bias: Vec<f32>,
}

impl LinearHead {
    /// A head of `dim` features and `classes` classes with every weight and bias 0 (a fit from
    /// nothing).
    pub fn zeros(dim: usize, classes: usize) -> Self {
        Self {
            dim,
            classes,
            weights: vec![0.0; dim * classes],
            bias: vec![0.0; classes],
        }
    }

    /// The logits of one feature row.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let mut z = self.bias.clone();
        for (k, xk) in x.iter().enumerate().take(self.dim) {
            let row = &self.weights[k * self.classes..(k + 1) * self.classes];
            for (zc, w) in z.iter_mut().zip(row) {
                *zc += xk * w;
            }
        }
        z
    }

    /// The class of one feature row.
    pub fn predict(&self, x: &[f32]) -> usize {
        argmax(&self.logits(x))
    }
}

/// The index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, x)| {
            if *x > bv { (i, *x) } else { (bi, bv) }
        })
        .0
}

/// How to fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitOptions {
    /// Strength of the L2 pull of the weights and the bias toward the starting (serving) head,
    /// on standardised features (default 0.01).
    pub l2: f64,
    /// Gradient steps at most (default 300).
    pub max_steps: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            l2: 0.01,
            max_steps: 300,
        }
    }
}

/// What a fit did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitStats {
    /// Training examples.
    pub examples: usize,
    /// Steps taken.
    pub steps: usize,
    /// Mean cross-entropy of the starting head on the training set.
    pub loss_before: f64,
    /// ... and of the fitted one.
    pub loss_after: f64,
    /// Training accuracy of the starting head.
    pub train_accuracy_before: f64,
    /// ... and of the fitted one.
    pub train_accuracy_after: f64,
}

/// Parameters on standardised features: `w[k][c]`, `b[c]`.
#[derive(Clone)]
struct Params {
    w: Vec<f64>,
    b: Vec<f64>,
}

struct Problem<'a> {
    /// Standardised features, `[n][d]`.
    x: Array2<f64>,
    y: &'a [usize],
    classes: usize,
    prior: Params,
    l2: f64,
}

impl Problem<'_> {
    /// The logits of every row, `[n][c]` (the products through `matrixmultiply`'s DGEMM, built
    /// optimised in dev too: the held-out folds fit the head dozens of times per turn).
    fn logits(&self, p: &Params) -> Array2<f64> {
        let w = ArrayView2::from_shape((self.x.ncols(), self.classes), &p.w)
            .expect("the weights are d x c");
        let mut z = self.x.dot(&w);
        for mut row in z.rows_mut() {
            row.iter_mut().zip(&p.b).for_each(|(v, b)| *v += b);
        }
        z
    }

    /// Objective and (optionally) its gradient.
    fn eval(&self, p: &Params, grad: bool) -> (f64, Option<Params>) {
        let n = self.x.nrows() as f64;
        let mut z = self.logits(p);
        let mut loss = 0.0;
        // Each row becomes its gradient wrt the logits: softmax − one-hot, over n.
        for (mut row, &y) in z.rows_mut().into_iter().zip(self.y) {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - m).exp()).sum();
            loss += m + sum.ln() - row[y];
            if grad {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = ((*v - m).exp() / sum - if j == y { 1.0 } else { 0.0 }) / n;
                }
            }
        }
        let mut g = grad.then(|| Params {
            w: self.x.t().dot(&z).iter().copied().collect(),
            b: z.sum_axis(Axis(0)).to_vec(),
        });
        let mut obj = loss / n;
        // The pull holds the bias too: otherwise a strong pull moves the whole adaptation into
        // the class priors, and its limit would not be the serving head.
        let pull = |v: &[f64], v0: &[f64], gv: Option<&mut Vec<f64>>| {
            if let Some(gv) = gv {
                for ((gi, a), a0) in gv.iter_mut().zip(v).zip(v0) {
                    *gi += self.l2 * (a - a0);
                }
            }
            0.5 * self.l2
                * v.iter()
                    .zip(v0)
                    .map(|(a, a0)| (a - a0).powi(2))
                    .sum::<f64>()
        };
        obj += pull(&p.w, &self.prior.w, g.as_mut().map(|g| &mut g.w));
        obj += pull(&p.b, &self.prior.b, g.as_mut().map(|g| &mut g.b));
        (obj, g)
    }

    fn accuracy(&self, p: &Params) -> f64 {
        let z = self.logits(p);
        let right = z
            .rows()
            .into_iter()
            .zip(self.y)
            .filter(|(row, y)| {
                let v: Vec<f32> = row.iter().map(|v| *v as f32).collect();
                argmax(&v) == **y
            })
            .count();
        right as f64 / self.x.nrows() as f64
    }
}

/// Fits a head on (`xs`, `ys`) starting from `start`; every row of `xs` is `start.dim` wide
/// and every label below `start.classes`.
pub fn fit(
    start: &LinearHead,
    xs: &[Vec<f32>],
    ys: &[usize],
    opts: &FitOptions,
) -> Result<(LinearHead, FitStats), TrainError> {
    let (d, c) = (start.dim, start.classes);
    if xs.is_empty() || xs.len() != ys.len() {
        return Err(TrainError::TooFew {
            have: xs.len(),
            need: 1,
        });
    }
    if xs.iter().any(|x| x.len() != d) || ys.iter().any(|y| *y >= c) {
        return Err(TrainError::Invalid(format!(
            "features must be {d} wide and labels below {c}"
        )));
    }
    // Standardise: z = (x - mean) / std; a constant feature keeps std 1.
    let n = xs.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|k| xs.iter().map(|x| f64::from(x[k])).sum::<f64>() / n)
        .collect();
    let std: Vec<f64> = (0..d)
        .map(|k| {
            let v = xs
                .iter()
                .map(|x| (f64::from(x[k]) - mean[k]).powi(2))
                .sum::<f64>()
                / n;
            if v > 1e-12 { v.sqrt() } else { 1.0 }
        })
        .collect();
    let x = Array2::from_shape_fn((xs.len(), d), |(i, k)| {
        (f64::from(xs[i][k]) - mean[k]) / std[k]
    });
    // The start in standardised coordinates: w' = w·std, b' = b + Σ mean·w.
    let w0: Vec<f64> = (0..d * c)
        .map(|i| f64::from(start.weights[i]) * std[i / c])
        .collect();
    let b0: Vec<f64> = (0..c)
        .map(|j| {
            f64::from(start.bias[j])
                + (0..d)
                    .map(|k| mean[k] * f64::from(start.weights[k * c + j]))
                    .sum::<f64>()
        })
        .collect();
    let prior = Params { w: w0, b: b0 };
    let prob = Problem {
        x,
        y: ys,
        classes: c,
        prior: prior.clone(),
        l2: opts.l2,
    };
    let (loss_before, _) = prob.eval(&prior, false);
    let accuracy_before = prob.accuracy(&prior);
    let mut p = prior;
    let mut step = 1.0;
    let mut steps = 0;
    let (mut obj, mut g) = prob.eval(&p, true);
    while steps < opts.max_steps {
        let Some(grad) = g.take() else { break };
        let norm2: f64 = grad.w.iter().chain(&grad.b).map(|v| v * v).sum();
        if norm2 < 1e-12 {
            break;
        }
        // Backtracking (Armijo) line search; the step grows back after a success.
        let mut accepted = None;
        for _ in 0..30 {
            let cand = Params {
                w: p.w
                    .iter()
                    .zip(&grad.w)
                    .map(|(w, gw)| w - step * gw)
                    .collect(),
                b: p.b
                    .iter()
                    .zip(&grad.b)
                    .map(|(b, gb)| b - step * gb)
                    .collect(),
            };
            let (o, _) = prob.eval(&cand, false);
            if o <= obj - 0.5 * step * norm2 {
                accepted = Some((cand, o));
                break;
            }
            step *= 0.5;
        }
        let Some((next, o)) = accepted else { break };
        p = next;
        steps += 1;
        let done = obj - o < 1e-9;
        (obj, g) = prob.eval(&p, true);
        step *= 2.0;
        if done {
            break;
        }
    }
    let accuracy_after = prob.accuracy(&p);
    let (loss_after, _) = prob.eval(&p, false);
    // Back to raw features: w = w'/std, b = b' - Σ mean·w.
    let weights: Vec<f32> = (0..d * c).map(|i| (p.w[i] / std[i / c]) as f32).collect();
    let bias: Vec<f32> = (0..c)
        .map(|j| {
            (p.b[j]
                - (0..d)
                    .map(|k| mean[k] * p.w[k * c + j] / std[k])
                    .sum::<f64>()) as f32
        })
        .collect();
    Ok((
        LinearHead {
            dim: d,
            classes: c,
            weights,
            bias,
        },
        FitStats {
            examples: xs.len(),
            steps,
            loss_before,
            loss_after,
            train_accuracy_before: accuracy_before,
            train_accuracy_after: accuracy_after,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two blobs the zero head cannot tell apart and a fitted one can.
    #[test]
    fn fitting_separates_classes_and_is_deterministic() {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..200u32 {
            let t = f32::from((i * 37 % 100) as u8) / 100.0;
            let y = (i % 2) as usize;
            let shift = if y == 1 { 3.0 } else { -3.0 };
            xs.push(vec![t + shift, 10.0 - t, 5.0]);
            ys.push(y);
        }
        let start = LinearHead {
            dim: 3,
            classes: 2,
            weights: vec![0.0; 6],
            bias: vec![0.0; 2],
        };
        let opts = FitOptions {
            l2: 1e-4,
            max_steps: 200,
        };
        let (h, stats) = fit(&start, &xs, &ys, &opts).expect("fits");
        assert!(stats.train_accuracy_after > 0.99, "{stats:?}");
        assert!(stats.loss_after < stats.loss_before, "{stats:?}");
        let right = xs
            .iter()
            .zip(&ys)
            .filter(|(x, y)| h.predict(x) == **y)
            .count();
        assert_eq!(right, xs.len(), "exported weights agree with the fit");
        let (again, _) = fit(&start, &xs, &ys, &opts).expect("fits");
        assert_eq!(h, again);
        // A strong pull toward the start keeps the start.
        let (kept, _) = fit(
            &start,
            &xs,
            &ys,
            &FitOptions {
                l2: 1e6,
                max_steps: 50,
            },
        )
        .expect("fits");
        assert!(kept.weights.iter().all(|w| w.abs() < 1e-3), "{kept:?}");
        assert!(
            fit(&start, &xs[..1], &[5], &opts).is_err(),
            "a label beyond the classes"
        );
    }

    /// The objective's gradient (loss and pull, weights and bias) matches finite differences.
    #[test]
    fn the_gradient_matches_finite_differences() {
        let x = Array2::from_shape_fn((5, 3), |(i, k)| ((i * 3 + k) as f64 * 0.37).sin());
        let y = [0, 2, 1, 2, 0];
        let prior = Params {
            w: (0..9).map(|i| f64::from(i) * 0.1 - 0.4).collect(),
            b: vec![0.2, -0.1, 0.3],
        };
        let prob = Problem {
            x,
            y: &y,
            classes: 3,
            prior,
            l2: 0.7,
        };
        let p = Params {
            w: (0..9).map(|i| (f64::from(i) * 1.3).cos()).collect(),
            b: vec![-0.5, 0.4, 0.1],
        };
        let (_, g) = prob.eval(&p, true);
        let g = g.expect("asked for");
        let h = 1e-6;
        for i in 0..12 {
            let bump = |d: f64| {
                let mut q = p.clone();
                if i < 9 {
                    q.w[i] += d
                } else {
                    q.b[i - 9] += d
                }
                prob.eval(&q, false).0
            };
            let numeric = (bump(h) - bump(-h)) / (2.0 * h);
            let analytic = if i < 9 { g.w[i] } else { g.b[i - 9] };
            assert!(
                (numeric - analytic).abs() < 1e-6,
                "{i}: {numeric} vs {analytic}"
            );
        }
    }

    /// A huge pull gives back the start itself, bias included, from a start the data disagree
    /// with (its bias favours the wrong class).
    #[test]
    fn a_huge_pull_keeps_the_start_weights_and_bias() {
        let xs: Vec<Vec<f32>> = (0..100u8)
            .map(|i| vec![f32::from(i) / 10.0, f32::from(i % 7)])
            .collect();
        let ys: Vec<usize> = (0..100).map(|i| usize::from(i >= 50)).collect();
        let start = LinearHead {
            dim: 2,
            classes: 2,
            weights: vec![0.3, -0.2, 0.1, 0.4],
            bias: vec![2.0, -1.5],
        };
        let huge = FitOptions {
            l2: 1e9,
            max_steps: 300,
        };
        let (kept, _) = fit(&start, &xs, &ys, &huge).expect("fits");
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
        assert!(close(&kept.weights, &start.weights), "{kept:?}");
        assert!(close(&kept.bias, &start.bias), "{kept:?}");
        // A weak pull moves both, so the test above can fail.
        let (moved, _) = fit(
            &start,
            &xs,
            &ys,
            &FitOptions {
                l2: 1e-3,
                max_steps: 300,
            },
        )
        .expect("fits");
        assert!(!close(&moved.bias, &start.bias), "{moved:?}");
    }
}
