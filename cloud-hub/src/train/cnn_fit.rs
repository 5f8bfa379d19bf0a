//! Training a [`Cnn`] whole (pure): shuffled mini-batches, softmax cross-entropy, every
//! layer's gradients by back-propagation (`Cnn::backward_one`), Adam with decoupled weight
//! decay.

use super::cnn::{Cnn, CnnError, Layer, TrainOptions, TrainStats, shapes};

/// What one training input should be answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// This class.
    Class(usize),
    /// This distribution over the classes (distillation: another model's probabilities).
    Soft(Vec<f32>),
}

impl Cnn {
    /// Trains every layer on `inputs` (`n` inputs, flat) with their class `labels`.
    pub fn train(
        &mut self,
        inputs: &[f32],
        labels: &[usize],
        opts: &TrainOptions,
    ) -> Result<TrainStats, CnnError> {
        let targets: Vec<Target> = labels.iter().map(|y| Target::Class(*y)).collect();
        self.train_towards(inputs, &targets, opts)
    }

    /// Trains every layer on `inputs` (`n` inputs, flat) toward their `targets`.
    pub fn train_towards(
        &mut self,
        inputs: &[f32],
        labels: &[Target],
        opts: &TrainOptions,
    ) -> Result<TrainStats, CnnError> {
        let shapes = shapes(self)?;
        let classes = shapes.last().map_or(0, |s| s.0);
        let len = self.input_len();
        if inputs.len() != labels.len() * len || labels.is_empty() {
            return Err(CnnError::Data(format!(
                "{} values for {} labels of {len}-value inputs",
                inputs.len(),
                labels.len()
            )));
        }
        for t in labels {
            match t {
                Target::Class(y) if *y >= classes => {
                    return Err(CnnError::Data(format!("label {y} of {classes} classes")));
                }
                Target::Soft(d) if d.len() != classes => {
                    return Err(CnnError::Data(format!(
                        "a distribution over {} of {classes} classes",
                        d.len()
                    )));
                }
                _ => {}
            }
        }
        let sizes: Vec<(usize, usize)> = self
            .layers
            .iter()
            .map(|l| match l {
                Layer::Conv { w, b, .. } | Layer::Linear { w, b, .. } => (w.len(), b.len()),
                _ => (0, 0),
            })
            .collect();
        let zeros = || -> Vec<(Vec<f32>, Vec<f32>)> {
            sizes
                .iter()
                .map(|(a, b)| (vec![0.0; *a], vec![0.0; *b]))
                .collect()
        };
        let (mut m1, mut m2) = (zeros(), zeros());
        let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let mut order: Vec<usize> = (0..labels.len()).collect();
        let mut state = opts.seed.max(1);
        let mut stats = TrainStats {
            first_epoch_loss: 0.0,
            last_epoch_loss: 0.0,
            steps: 0,
        };
        for epoch in 0..opts.epochs.max(1) {
            for i in (1..order.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut loss = 0.0f64;
            for batch in order.chunks(opts.batch.max(1)) {
                let mut grads = zeros();
                for &n in batch {
                    let mut saved = Vec::with_capacity(self.layers.len());
                    let mut p =
                        self.forward_one(&inputs[n * len..][..len], &shapes, Some(&mut saved));
                    let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = p
                        .iter_mut()
                        .map(|v| {
                            *v = (*v - m).exp();
                            *v
                        })
                        .sum();
                    p.iter_mut().for_each(|v| *v /= sum);
                    let scale = 1.0 / batch.len() as f32;
                    let mut d: Vec<f32> = p.iter().map(|v| v * scale).collect();
                    match &labels[n] {
                        Target::Class(y) => {
                            loss -= f64::from(p[*y].max(1e-12).ln());
                            d[*y] -= scale;
                        }
                        Target::Soft(t) => {
                            for ((dc, pc), tc) in d.iter_mut().zip(&p).zip(t) {
                                loss -= f64::from(*tc) * f64::from(pc.max(1e-12).ln());
                                *dc -= tc * scale;
                            }
                        }
                    }
                    self.backward_one(&shapes, saved, d, &mut grads);
                }
                stats.steps += 1;
                let t = stats.steps as i32;
                let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                let lr = opts.learning_rate;
                for (li, layer) in self.layers.iter_mut().enumerate() {
                    let (Layer::Conv { w, b, .. } | Layer::Linear { w, b, .. }) = layer else {
                        continue;
                    };
                    for (which, params) in [(0, w), (1, b)] {
                        let (g, a, v) = if which == 0 {
                            (&grads[li].0, &mut m1[li].0, &mut m2[li].0)
                        } else {
                            (&grads[li].1, &mut m1[li].1, &mut m2[li].1)
                        };
                        for (((x, g), a), v) in
                            params.iter_mut().zip(g).zip(a.iter_mut()).zip(v.iter_mut())
                        {
                            *a = beta1 * *a + (1.0 - beta1) * g;
                            *v = beta2 * *v + (1.0 - beta2) * g * g;
                            let decay = if which == 0 {
                                opts.weight_decay * *x
                            } else {
                                0.0
                            };
                            *x -= lr * ((*a / c1) / ((*v / c2).sqrt() + eps) + decay);
                        }
                    }
                }
            }
            let mean = loss / labels.len() as f64;
            if epoch == 0 {
                stats.first_epoch_loss = mean;
            }
            stats.last_epoch_loss = mean;
        }
        Ok(stats)
    }
}
