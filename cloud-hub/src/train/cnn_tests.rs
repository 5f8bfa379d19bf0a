//! The network's gradients against finite differences, and training on a small problem.

use super::*;

/// A tiny network with every layer kind: 1×6×6 → conv 2 → relu → pool → conv 3 → relu → gap
/// → linear 3.
fn tiny(seed: u64) -> Cnn {
    let mut s = seed;
    let mut r = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 2000) as f32 / 1000.0 - 1.0
    };
    let mut v = |n: usize| (0..n).map(|_| r() * 0.5).collect::<Vec<f32>>();
    Cnn {
        channels: 1,
        height: 6,
        width: 6,
        layers: vec![
            Layer::Conv {
                cin: 1,
                cout: 2,
                w: v(18),
                b: v(2),
            },
            Layer::Relu,
            Layer::MaxPool,
            Layer::Conv {
                cin: 2,
                cout: 3,
                w: v(54),
                b: v(3),
            },
            Layer::Relu,
            Layer::GlobalAvgPool,
            Layer::Linear {
                dim: 3,
                classes: 3,
                w: v(9),
                b: v(3),
            },
        ],
    }
}

fn loss(net: &Cnn, x: &[f32], y: usize) -> f64 {
    let l = &net.logits(x).expect("runs")[0];
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = l.iter().map(|v| f64::from((v - m).exp())).sum();
    sum.ln() - f64::from(l[y] - m)
}

#[test]
fn gradients_match_finite_differences() {
    let net = tiny(7);
    // No two patches alike: max pooling never meets a tie, where the loss has no derivative.
    let x: Vec<f32> = (0..36).map(|i| (i as f32 * 1.7).sin()).collect();
    let y = 1;
    let shapes = shapes(&net).expect("shapes");
    let mut saved = Vec::new();
    let mut p = net.forward_one(&x, &shapes, Some(&mut saved));
    let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = p.iter().map(|v| (v - m).exp()).sum();
    p.iter_mut().for_each(|v| *v = (*v - m).exp() / sum);
    p[y] -= 1.0;
    let mut grads: Vec<(Vec<f32>, Vec<f32>)> = net
        .layers
        .iter()
        .map(|l| match l {
            Layer::Conv { w, b, .. } | Layer::Linear { w, b, .. } => {
                (vec![0.0; w.len()], vec![0.0; b.len()])
            }
            _ => (vec![], vec![]),
        })
        .collect();
    net.backward_one(&shapes, saved, p, &mut grads);
    let mut checked = 0;
    for li in [0, 3, 6] {
        for (which, count) in [(0, 6), (1, 2)] {
            for k in 0..count {
                let eps = 1e-3f32;
                let bump = |d: f32| {
                    let mut n = net.clone();
                    if let Layer::Conv { w, b, .. } | Layer::Linear { w, b, .. } = &mut n.layers[li]
                    {
                        if which == 0 { w[k] += d } else { b[k] += d }
                    }
                    loss(&n, &x, y)
                };
                let numeric = (bump(eps) - bump(-eps)) / (2.0 * f64::from(eps));
                let analytic = f64::from(if which == 0 {
                    grads[li].0[k]
                } else {
                    grads[li].1[k]
                });
                assert!(
                    (numeric - analytic).abs() < 1e-4 + 0.01 * numeric.abs(),
                    "layer {li} {} {k}: numeric {numeric} vs analytic {analytic}",
                    if which == 0 { "weight" } else { "bias" }
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 24);
}

#[test]
fn training_learns_a_small_problem_and_refuses_bad_data() {
    // Three classes: a bright blob in the top-left, the bottom-right, or nowhere.
    let mut x = Vec::new();
    let mut y = Vec::new();
    for n in 0..90 {
        let class = n % 3;
        for i in 0..36 {
            let (r, c) = (i / 6, i % 6);
            let on = (class == 0 && r < 3 && c < 3) || (class == 1 && r >= 3 && c >= 3);
            x.push(if on { 1.0 } else { 0.0 } + ((n * 31 + i * 17) % 7) as f32 / 20.0);
        }
        y.push(class);
    }
    let mut net = tiny(3);
    let accuracy = |net: &Cnn| {
        let l = net.logits(&x).expect("runs");
        l.iter()
            .zip(&y)
            .filter(|(l, y)| l.iter().enumerate().all(|(i, v)| *v <= l[**y] || i == **y))
            .count() as f64
            / y.len() as f64
    };
    let before = accuracy(&net);
    let opts = TrainOptions {
        epochs: 30,
        batch: 10,
        learning_rate: 0.02,
        weight_decay: 0.0,
        seed: 1,
    };
    let stats = net.train(&x, &y, &opts).expect("trains");
    let after = accuracy(&net);
    assert!(
        stats.last_epoch_loss < stats.first_epoch_loss * 0.5,
        "{stats:?}"
    );
    assert!(
        after > 0.95 && after > before,
        "accuracy {before} -> {after}"
    );
    assert_eq!(stats.steps, 30 * 9);
    assert!(matches!(
        net.train(&x[..35], &y[..1], &opts),
        Err(CnnError::Data(_))
    ));
    assert!(matches!(
        net.train(&x[..36], &[5], &opts),
        Err(CnnError::Data(_))
    ));
    let mut broken = tiny(3);
    broken.layers.pop();
    assert!(matches!(broken.check(), Err(CnnError::Shape(_))));
    assert_eq!(tiny(3).parameters(), 18 + 2 + 54 + 3 + 9 + 3);
}
