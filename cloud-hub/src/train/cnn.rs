//! A small sequential convolutional network and its training (pure: no IO): 3×3 convolutions
//! (stride 1, padding 1, as im2col products through `matrixmultiply`'s SGEMM), ReLU, 2×2 max
//! pooling, global average pooling and a final linear layer, trained whole by back-propagation
//! with Adam on softmax cross-entropy. It holds exactly what [`super::cnn_graph`] reads from a
//! serving ONNX graph and writes back, so a model like vision-fashion's 24k-parameter edge net
//! can be retrained end to end on the fleet's feedback.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

/// One layer, in order from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// 3×3 convolution, stride 1, zero padding 1.
    Conv {
        /// Input channels.
        cin: usize,
        /// Output channels.
        cout: usize,
        /// Weights `[cout][cin][3][3]`.
        w: Vec<f32>,
        /// Bias, one per output channel.
        b: Vec<f32>,
    },
    /// `max(x, 0)`.
    Relu,
    /// 2×2 max pooling, stride 2 (odd trailing rows/columns dropped).
    MaxPool,
    /// Mean over each channel's map (then the channels are the features).
    GlobalAvgPool,
    /// Fully connected: `logits = w · x + b`, `w` as `[classes][dim]` (ONNX `Gemm`, `transB`).
    Linear {
        /// Input width.
        dim: usize,
        /// Outputs.
        classes: usize,
        /// Weights `[classes][dim]`.
        w: Vec<f32>,
        /// Bias.
        b: Vec<f32>,
    },
}

/// A network on `[channels, height, width]` inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Cnn {
    /// Input channels.
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// The layers.
    pub layers: Vec<Layer>,
}

/// Why a network cannot be built or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CnnError {
    /// The layers do not fit together or with the input.
    #[error("network shape: {0}")]
    Shape(String),
    /// An input of the wrong size or a label out of range.
    #[error("training data: {0}")]
    Data(String),
}

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Passes over the data.
    pub epochs: usize,
    /// Examples per step.
    pub batch: usize,
    /// Adam's learning rate.
    pub learning_rate: f32,
    /// L2 penalty on the weights (decoupled, AdamW style), per step × learning rate.
    pub weight_decay: f32,
    /// The shuffling seed.
    pub seed: u64,
}

/// The training's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainStats {
    /// Mean cross-entropy over the first epoch (as the weights moved).
    pub first_epoch_loss: f64,
    /// ... and over the last.
    pub last_epoch_loss: f64,
    /// Optimiser steps.
    pub steps: usize,
}

/// A tensor's shape `[c, h, w]` as it enters each layer; the last entry is the output's.
pub(super) fn shapes(net: &Cnn) -> Result<Vec<(usize, usize, usize)>, CnnError> {
    let mut s = (net.channels, net.height, net.width);
    let mut out = vec![s];
    for (i, l) in net.layers.iter().enumerate() {
        s = match l {
            Layer::Conv { cin, cout, w, b } => {
                if *cin != s.0 || w.len() != cout * cin * 9 || b.len() != *cout {
                    return Err(CnnError::Shape(format!(
                        "layer {i}: a {cin}→{cout} convolution on {} channels",
                        s.0
                    )));
                }
                (*cout, s.1, s.2)
            }
            Layer::Relu => s,
            Layer::MaxPool => (s.0, s.1 / 2, s.2 / 2),
            Layer::GlobalAvgPool => (s.0, 1, 1),
            Layer::Linear { dim, classes, w, b } => {
                if s.0 * s.1 * s.2 != *dim || w.len() != dim * classes || b.len() != *classes {
                    return Err(CnnError::Shape(format!(
                        "layer {i}: a linear layer of width {dim} on {s:?}"
                    )));
                }
                (*classes, 1, 1)
            }
        };
        if s.1 == 0 || s.2 == 0 {
            return Err(CnnError::Shape(format!("layer {i}: an empty map")));
        }
        out.push(s);
    }
    if !matches!(net.layers.last(), Some(Layer::Linear { .. })) {
        return Err(CnnError::Shape("the last layer is not linear".into()));
    }
    Ok(out)
}

/// `c = a · b` (+ `c` when `acc`): `a` is `m×k`, `b` `k×n`, each given with its (row, column)
/// strides so that transposes need no copy; `c` is `m×n` row-major.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    sa: (usize, usize),
    b: &[f32],
    sb: (usize, usize),
    c: &mut [f32],
    acc: bool,
) {
    let a = ArrayView2::from_shape((m, k).strides(sa), a)
        .expect("callers pass a slice holding every element of the m×k view");
    let b = ArrayView2::from_shape((k, n).strides(sb), b)
        .expect("callers pass a slice holding every element of the k×n view");
    let mut c =
        ArrayViewMut2::from_shape((m, n), &mut c[..m * n]).expect("callers pass an m×n output");
    general_mat_mul(1.0, &a, &b, if acc { 1.0 } else { 0.0 }, &mut c);
}

/// The 3×3 patches of a `[c, h, w]` map as a `[c·9, h·w]` matrix (zero padding 1).
fn im2col(x: &[f32], c: usize, h: usize, w: usize, cols: &mut [f32]) {
    let p = h * w;
    for ci in 0..c {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &mut cols[((ci * 9) + ky * 3 + kx) * p..][..p];
                for y in 0..h {
                    let sy = y as isize + ky as isize - 1;
                    for xx in 0..w {
                        let sx = xx as isize + kx as isize - 1;
                        row[y * w + xx] =
                            if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                0.0
                            } else {
                                x[ci * p + sy as usize * w + sx as usize]
                            };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each patch gradient back onto its pixels.
fn col2im(cols: &[f32], c: usize, h: usize, w: usize, dx: &mut [f32]) {
    let p = h * w;
    for ci in 0..c {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &cols[((ci * 9) + ky * 3 + kx) * p..][..p];
                for y in 0..h {
                    let sy = y as isize + ky as isize - 1;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    for xx in 0..w {
                        let sx = xx as isize + kx as isize - 1;
                        if sx >= 0 && sx < w as isize {
                            dx[ci * p + sy as usize * w + sx as usize] += row[y * w + xx];
                        }
                    }
                }
            }
        }
    }
}

/// What a layer's forward pass keeps for the backward one.
pub(super) enum Saved {
    /// The patches.
    Conv(Vec<f32>),
    /// The output (ReLU: where it is positive).
    Relu(Vec<f32>),
    /// Each output's source index.
    MaxPool(Vec<usize>),
    /// The input.
    Input(Vec<f32>),
    /// Nothing.
    None,
}

impl Cnn {
    /// Checks that the layers fit; returns the number of classes.
    pub fn check(&self) -> Result<usize, CnnError> {
        Ok(shapes(self)?.last().map_or(0, |s| s.0))
    }

    /// Trainable parameters.
    pub fn parameters(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                Layer::Conv { w, b, .. } | Layer::Linear { w, b, .. } => w.len() + b.len(),
                _ => 0,
            })
            .sum()
    }

    pub(super) fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Forward pass of one input; the per-layer state for [`Self::backward`] when `save`.
    pub(super) fn forward_one(
        &self,
        x: &[f32],
        shapes: &[(usize, usize, usize)],
        saved: Option<&mut Vec<Saved>>,
    ) -> Vec<f32> {
        let mut saved = saved;
        let mut cur = x.to_vec();
        for (l, &(c, h, w)) in self.layers.iter().zip(shapes) {
            let (next, keep) = match l {
                Layer::Conv {
                    cin,
                    cout,
                    w: wt,
                    b,
                } => {
                    let p = h * w;
                    let mut cols = vec![0.0; cin * 9 * p];
                    im2col(&cur, *cin, h, w, &mut cols);
                    let mut y = vec![0.0; cout * p];
                    for (co, row) in y.chunks_exact_mut(p).enumerate() {
                        row.fill(b[co]);
                    }
                    let k = cin * 9;
                    gemm(*cout, k, p, wt, (k, 1), &cols, (p, 1), &mut y, true);
                    (y, Saved::Conv(cols))
                }
                Layer::Relu => {
                    let y: Vec<f32> = cur.iter().map(|v| v.max(0.0)).collect();
                    let keep = if saved.is_some() {
                        Saved::Relu(y.clone())
                    } else {
                        Saved::None
                    };
                    (y, keep)
                }
                Layer::MaxPool => {
                    let (oh, ow) = (h / 2, w / 2);
                    let mut y = vec![0.0; c * oh * ow];
                    let mut from = vec![0usize; c * oh * ow];
                    for ci in 0..c {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut best = ci * h * w + 2 * oy * w + 2 * ox;
                                for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                                    let i = ci * h * w + (2 * oy + dy) * w + 2 * ox + dx;
                                    if cur[i] > cur[best] {
                                        best = i;
                                    }
                                }
                                let o = ci * oh * ow + oy * ow + ox;
                                y[o] = cur[best];
                                from[o] = best;
                            }
                        }
                    }
                    (y, Saved::MaxPool(from))
                }
                Layer::GlobalAvgPool => {
                    let p = (h * w) as f32;
                    let y = cur
                        .chunks_exact(h * w)
                        .map(|m| m.iter().sum::<f32>() / p)
                        .collect();
                    (y, Saved::None)
                }
                Layer::Linear {
                    dim,
                    classes,
                    w: wt,
                    b,
                } => {
                    let mut y = b.clone();
                    gemm(*classes, *dim, 1, wt, (*dim, 1), &cur, (1, 1), &mut y, true);
                    let keep = if saved.is_some() {
                        Saved::Input(cur)
                    } else {
                        Saved::None
                    };
                    (y, keep)
                }
            };
            if let Some(s) = saved.as_deref_mut() {
                s.push(keep);
            }
            cur = next;
        }
        cur
    }

    /// The logits of each input (`inputs` holds `n` inputs of `channels·height·width` values).
    pub fn logits(&self, inputs: &[f32]) -> Result<Vec<Vec<f32>>, CnnError> {
        let shapes = shapes(self)?;
        let len = self.input_len();
        if len == 0 || !inputs.len().is_multiple_of(len) {
            return Err(CnnError::Data(format!(
                "{} values is not a whole number of {len}-value inputs",
                inputs.len()
            )));
        }
        Ok(inputs
            .chunks_exact(len)
            .map(|x| self.forward_one(x, &shapes, None))
            .collect())
    }

    /// Adds one input's gradients (of the loss `dlogits` back through the saved state) to `grads`
    /// (one `(dw, db)` per layer, empty for layers without parameters).
    pub(super) fn backward_one(
        &self,
        shapes: &[(usize, usize, usize)],
        saved: Vec<Saved>,
        dlogits: Vec<f32>,
        grads: &mut [(Vec<f32>, Vec<f32>)],
    ) {
        let mut d = dlogits;
        for (i, (l, keep)) in self.layers.iter().zip(saved).enumerate().rev() {
            let (c, h, w) = shapes[i];
            let (gw, gb) = &mut grads[i];
            d = match (l, keep) {
                (
                    Layer::Linear {
                        dim,
                        classes,
                        w: wt,
                        ..
                    },
                    Saved::Input(x),
                ) => {
                    gemm(*classes, 1, *dim, &d, (1, 1), &x, (*dim, 1), gw, true);
                    for (g, v) in gb.iter_mut().zip(&d) {
                        *g += v;
                    }
                    if i == 0 {
                        break;
                    }
                    let mut dx = vec![0.0; *dim];
                    gemm(
                        1,
                        *classes,
                        *dim,
                        &d,
                        (*classes, 1),
                        wt,
                        (*dim, 1),
                        &mut dx,
                        false,
                    );
                    dx
                }
                (Layer::GlobalAvgPool, _) => {
                    let p = h * w;
                    let mut dx = vec![0.0; c * p];
                    for (m, g) in dx.chunks_exact_mut(p).zip(&d) {
                        m.fill(g / p as f32);
                    }
                    dx
                }
                (Layer::MaxPool, Saved::MaxPool(from)) => {
                    let mut dx = vec![0.0; c * h * w];
                    for (g, f) in d.iter().zip(from) {
                        dx[f] += g;
                    }
                    dx
                }
                (Layer::Relu, Saved::Relu(y)) => d
                    .iter()
                    .zip(&y)
                    .map(|(g, v)| if *v > 0.0 { *g } else { 0.0 })
                    .collect(),
                (
                    Layer::Conv {
                        cin, cout, w: wt, ..
                    },
                    Saved::Conv(cols),
                ) => {
                    let p = h * w;
                    let k = cin * 9;
                    gemm(*cout, p, k, &d, (p, 1), &cols, (1, p), gw, true);
                    for (g, row) in gb.iter_mut().zip(d.chunks_exact(p)) {
                        *g += row.iter().sum::<f32>();
                    }
                    if i == 0 {
                        break;
                    }
                    let mut dcols = vec![0.0; k * p];
                    gemm(k, *cout, p, wt, (1, k), &d, (p, 1), &mut dcols, false);
                    let mut dx = vec![0.0; cin * p];
                    col2im(&dcols, *cin, h, w, &mut dx);
                    dx
                }
                _ => unreachable!("forward_one saves the state each layer's backward reads"),
            };
        }
    }
}

#[cfg(test)]
#[path = "cnn_tests.rs"]
mod tests;
