//! Reading and rewriting a classifier's linear head in an ONNX file: where the head reads its
//! features, its current weights (FP32, QDQ `DequantizeLinear` or dynamic-quantized
//! `MatMulInteger`, as the quantizer left them), a copy of the graph that also outputs the
//! features, and a copy whose head is replaced by a new FP32 `Gemm` (+ `Softmax` for a
//! probability output). Every other byte of the file is kept as it was. Pure: no IO.

use super::TrainError;
use super::wire::{self, Field, LEN};
use std::collections::{BTreeSet, HashMap};

/// Names the new head's initializers and nodes carry.
const W_NAME: &str = "tandem.head.weight";
const B_NAME: &str = "tandem.head.bias";
const LOGITS: &str = "tandem.head.logits";
/// Most nodes a head may span (beyond it the "head" would be part of the network).
const MAX_HEAD_NODES: usize = 16;

/// A node, as far as the surgery needs it.
#[derive(Debug, Clone)]
pub(super) struct Node<'a> {
    pub(super) op: String,
    pub(super) inputs: Vec<String>,
    pub(super) outputs: Vec<String>,
    raw: &'a [u8],
}

/// The model's linear head.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// The tensor the head reads (`[batch, dim]`).
    pub feature: String,
    /// The classification output it writes.
    pub output: String,
    /// Feature width.
    pub dim: usize,
    /// Classes.
    pub classes: usize,
    /// Weights, row-major `[dim][classes]`.
    pub weights: Vec<f32>,
    /// Bias, one per class.
    pub bias: Vec<f32>,
}

impl Head {
    /// The head as the trainer fits it (the same weights and bias).
    pub fn linear(&self) -> super::head::LinearHead {
        super::head::LinearHead {
            dim: self.dim,
            classes: self.classes,
            weights: self.weights.clone(),
            bias: self.bias.clone(),
        }
    }
}

fn bad(msg: impl Into<String>) -> TrainError {
    TrainError::Onnx(msg.into())
}

/// An ONNX model split into the parts the surgery reads.
pub(super) struct Model<'a> {
    model: Vec<Field<'a>>,
    pub(super) graph: Vec<Field<'a>>,
    pub(super) nodes: Vec<Node<'a>>,
    inits: HashMap<String, Vec<Field<'a>>>,
}

pub(super) fn parse(bytes: &[u8]) -> Result<Model<'_>, TrainError> {
    let model = wire::fields(bytes)?;
    let g = model
        .iter()
        .find(|f| f.number == 7 && f.wire == LEN)
        .ok_or_else(|| bad("the file has no graph"))?;
    let graph = wire::fields(g.payload)?;
    let mut nodes = Vec::new();
    let mut inits = HashMap::new();
    for f in &graph {
        match f.number {
            1 => {
                let n = wire::fields(f.payload)?;
                nodes.push(Node {
                    op: wire::string(&n, 4),
                    inputs: wire::strings(&n, 1),
                    outputs: wire::strings(&n, 2),
                    raw: f.payload,
                });
            }
            5 => {
                let t = wire::fields(f.payload)?;
                inits.insert(wire::string(&t, 8), t);
            }
            _ => {}
        }
    }
    Ok(Model {
        model,
        graph,
        nodes,
        inits,
    })
}

impl Node<'_> {
    /// The INT attribute `name`.
    pub(super) fn int_attr(&self, name: &str) -> Option<i64> {
        let fs = wire::fields(self.raw).ok()?;
        fs.iter().filter(|f| f.number == 5).find_map(|a| {
            let a = wire::fields(a.payload).ok()?;
            (wire::string(&a, 1) == name).then(|| wire::ints(&a, 3).ok()?.first().copied())?
        })
    }

    /// The INTS attribute `name`.
    pub(super) fn ints_attr(&self, name: &str) -> Option<Vec<i64>> {
        let fs = wire::fields(self.raw).ok()?;
        fs.iter().filter(|f| f.number == 5).find_map(|a| {
            let a = wire::fields(a.payload).ok()?;
            (wire::string(&a, 1) == name).then(|| wire::ints(&a, 8).ok())?
        })
    }
}

impl Model<'_> {
    pub(super) fn producer(&self, tensor: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == tensor))
    }

    pub(super) fn consumers(&self, tensor: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].inputs.iter().any(|x| x == tensor))
            .collect()
    }

    /// An initializer's values as f32 (FLOAT, UINT8, INT8, INT32, INT64), and its dims.
    fn values(&self, name: &str) -> Option<(Vec<f32>, Vec<i64>)> {
        let t = self.inits.get(name)?;
        let dims = wire::ints(t, 1).ok()?;
        let ty = wire::ints(t, 2).ok()?.first().copied()?;
        let raw = t.iter().find(|f| f.number == 9).map(|f| f.payload);
        let v: Vec<f32> = match (ty, raw) {
            (1, Some(r)) => r
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            (1, None) => wire::floats(t, 4),
            (2, Some(r)) => r.iter().map(|b| f32::from(*b)).collect(),
            (3, Some(r)) => r.iter().map(|b| f32::from(*b as i8)).collect(),
            (6, Some(r)) => r
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            (7, Some(r)) => r
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            (2 | 3 | 6, None) => wire::ints(t, 5).ok()?.iter().map(|v| *v as f32).collect(),
            (7, None) => wire::ints(t, 7).ok()?.iter().map(|v| *v as f32).collect(),
            _ => return None,
        };
        Some((v, dims))
    }

    /// Whether the `QuantizeLinear` node `n` clamps at zero from below (an unsigned type with
    /// zero point 0, or a signed one at -128): the quantizer folds a ReLU into such a node.
    pub(super) fn clamps_at_zero(&self, n: &Node<'_>) -> bool {
        let Some(zp) = n.inputs.get(2).filter(|z| !z.is_empty()) else {
            return false;
        };
        let ty = self
            .inits
            .get(zp)
            .and_then(|t| wire::ints(t, 2).ok()?.first().copied());
        let Some((v, _)) = self.values(zp) else {
            return false;
        };
        match ty {
            Some(2) => v.iter().all(|z| *z == 0.0),
            Some(3) => v.iter().all(|z| *z == -128.0),
            _ => false,
        }
    }

    /// A float tensor that is an initializer or a `DequantizeLinear` of initializers.
    pub(super) fn resolve(&self, name: &str) -> Option<(Vec<f32>, Vec<i64>)> {
        if let Some((v, d)) = self.values(name) {
            return Some((v, d));
        }
        let n = &self.nodes[self.producer(name)?];
        if n.op != "DequantizeLinear" {
            return None;
        }
        let (q, dims) = self.values(&n.inputs[0])?;
        let (scale, _) = self.values(n.inputs.get(1)?)?;
        let zp = match n.inputs.get(2).filter(|z| !z.is_empty()) {
            Some(z) => self.values(z)?.0,
            None => vec![0.0; scale.len()],
        };
        let axis = n.int_attr("axis").unwrap_or(1);
        let axis = if axis < 0 {
            axis + dims.len() as i64
        } else {
            axis
        } as usize;
        let inner: i64 = dims.iter().skip(axis + 1).product();
        let along = dims.get(axis).copied().unwrap_or(1).max(1);
        let v = q
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let c = if scale.len() == 1 {
                    0
                } else {
                    ((i as i64 / inner.max(1)) % along) as usize
                };
                (x - zp.get(c).copied().unwrap_or(0.0)) * scale.get(c).copied().unwrap_or(0.0)
            })
            .collect();
        Some((v, dims))
    }

    /// Follows `tensor` back through (de)quantization to the tensor it stands for.
    fn unquantized(&self, mut tensor: String) -> String {
        while let Some(p) = self.producer(&tensor) {
            let n = &self.nodes[p];
            if !matches!(
                n.op.as_str(),
                "QuantizeLinear" | "DequantizeLinear" | "DynamicQuantizeLinear"
            ) {
                break;
            }
            tensor = n.inputs[0].clone();
        }
        tensor
    }

    /// Indexes of the nodes `tensor` depends on.
    fn ancestors(&self, tensor: &str) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![tensor.to_string()];
        while let Some(t) = todo.pop() {
            if let Some(p) = self.producer(&t)
                && seen.insert(p)
            {
                todo.extend(
                    self.nodes[p]
                        .inputs
                        .iter()
                        .filter(|i| !i.is_empty())
                        .cloned(),
                );
            }
        }
        seen
    }

    pub(super) fn first_output(&self) -> Result<String, TrainError> {
        self.graph
            .iter()
            .find(|f| f.number == 12)
            .map(|f| wire::fields(f.payload).map(|v| wire::string(&v, 1)))
            .transpose()?
            .ok_or_else(|| bad("the graph has no output"))
    }

    /// The bias an `Add` after `tensor` adds (through a `Cast`/`Mul` rescale chain).
    fn bias_after(&self, mut tensor: String, classes: usize) -> Option<(Vec<f32>, String)> {
        for _ in 0..4 {
            let c = *self.consumers(&tensor).first()?;
            let n = &self.nodes[c];
            if n.op == "Add" {
                let other = n.inputs.iter().find(|i| **i != tensor)?;
                let (b, _) = self.resolve(other)?;
                return (b.len() == classes).then(|| (b, n.outputs[0].clone()));
            }
            tensor = n.outputs.first()?.clone();
        }
        None
    }

    /// The `Mul` scale applied to a `MatMulInteger`'s output: its initializer factor (the
    /// weight scale; the input scale is dynamic).
    fn integer_scale(&self, out: &str) -> Option<Vec<f32>> {
        let cast = &self.nodes[*self.consumers(out).first()?];
        let mul = &self.nodes[*self.consumers(cast.outputs.first()?).first()?];
        let factor = mul.inputs.iter().find(|i| **i != cast.outputs[0])?;
        let scales = &self.nodes[self.producer(factor)?];
        scales
            .inputs
            .iter()
            .find_map(|i| self.values(i).map(|v| v.0))
    }
}

/// The head of the model in `onnx`: the last `Gemm`/`MatMul`/`MatMulInteger` before its first
/// output, the tensor it reads (before quantization) and its weights.
pub fn head(onnx: &[u8]) -> Result<Head, TrainError> {
    let m = parse(onnx)?;
    let output = m.first_output()?;
    let before = m.ancestors(&output);
    let lin = before
        .iter()
        .rev()
        .copied()
        .find(|i| matches!(m.nodes[*i].op.as_str(), "Gemm" | "MatMul" | "MatMulInteger"))
        .ok_or_else(|| bad(format!("no Gemm/MatMul before output `{output}`")))?;
    let n = &m.nodes[lin];
    let feature = m.unquantized(n.inputs[0].clone());
    let (w, dims, bias) = match n.op.as_str() {
        "Gemm" => {
            let (w, dims) = m
                .resolve(&n.inputs[1])
                .ok_or_else(|| bad("Gemm weight unreadable"))?;
            let (w, dims) = if n.int_attr("transB") == Some(1) {
                transpose(&w, &dims)?
            } else {
                (w, dims)
            };
            let classes = dims.get(1).copied().unwrap_or(0) as usize;
            let bias = match n.inputs.get(2).filter(|b| !b.is_empty()) {
                Some(b) => m.resolve(b).ok_or_else(|| bad("Gemm bias unreadable"))?.0,
                None => vec![0.0; classes],
            };
            (w, dims, bias)
        }
        "MatMul" => {
            let (w, dims) = m
                .resolve(&n.inputs[1])
                .ok_or_else(|| bad("MatMul weight unreadable"))?;
            let classes = dims.get(1).copied().unwrap_or(0) as usize;
            let bias = m.bias_after(n.outputs[0].clone(), classes).map(|b| b.0);
            (w, dims, bias.unwrap_or_else(|| vec![0.0; classes]))
        }
        _ => {
            let (q, dims) = m
                .values(&n.inputs[1])
                .ok_or_else(|| bad("MatMulInteger weight unreadable"))?;
            let classes = dims.get(1).copied().unwrap_or(0) as usize;
            let zp = match n.inputs.get(3).filter(|z| !z.is_empty()) {
                Some(z) => {
                    m.values(z)
                        .ok_or_else(|| bad("weight zero point unreadable"))?
                        .0
                }
                None => vec![0.0; classes],
            };
            let scale = m
                .integer_scale(&n.outputs[0])
                .ok_or_else(|| bad("MatMulInteger weight scale not found"))?;
            let at = |v: &[f32], c: usize| {
                v.get(if v.len() == 1 { 0 } else { c })
                    .copied()
                    .unwrap_or(0.0)
            };
            let w = q
                .iter()
                .enumerate()
                .map(|(i, x)| (x - at(&zp, i % classes.max(1))) * at(&scale, i % classes.max(1)))
                .collect();
            let bias = m.bias_after(n.outputs[0].clone(), classes).map(|b| b.0);
            (w, dims, bias.unwrap_or_else(|| vec![0.0; classes]))
        }
    };
    let (dim, classes) = match dims[..] {
        [d, c] if d > 0 && c > 0 => (d as usize, c as usize),
        _ => {
            return Err(bad(format!(
                "head weight of shape {dims:?}, not [dim, classes]"
            )));
        }
    };
    if w.len() != dim * classes || bias.len() != classes {
        return Err(bad("head weight or bias of the wrong size"));
    }
    let keep = m.ancestors(&feature);
    let head_nodes = before.len().saturating_sub(keep.len());
    if head_nodes > MAX_HEAD_NODES {
        return Err(bad(format!(
            "the head from `{feature}` spans {head_nodes} nodes: not a linear head"
        )));
    }
    Ok(Head {
        feature,
        output,
        dim,
        classes,
        weights: w,
        bias,
    })
}

fn transpose(w: &[f32], dims: &[i64]) -> Result<(Vec<f32>, Vec<i64>), TrainError> {
    let [r, c] = dims[..] else {
        return Err(bad("a head weight that is not a matrix"));
    };
    let (r, c) = (r as usize, c as usize);
    let mut t = vec![0.0; w.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = w[i * c + j];
        }
    }
    Ok((t, vec![c as i64, r as i64]))
}

/// `onnx` with `tensor` (FP32, `[batch, width]`) as one more graph output.
pub fn expose(onnx: &[u8], tensor: &str, width: usize) -> Result<Vec<u8>, TrainError> {
    let m = parse(onnx)?;
    let mut graph: Vec<u8> = m.graph.iter().flat_map(|f| f.raw.iter().copied()).collect();
    wire::put_bytes(&mut graph, 12, &wire::float_value_info(tensor, Some(width)));
    Ok(with_graph(&m, &graph))
}

pub(super) fn with_graph(m: &Model<'_>, graph: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in &m.model {
        if f.number == 7 {
            wire::put_bytes(&mut out, 7, graph);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    out
}

/// `onnx` with its head replaced: the nodes after `head.feature` removed, then
/// `Gemm(feature, weights, bias)` (+ `Softmax` when `softmax`) writing `head.output`; the
/// initializers only the old head used dropped.
pub fn replace(
    onnx: &[u8],
    head: &Head,
    weights: &[f32],
    bias: &[f32],
    softmax: bool,
) -> Result<Vec<u8>, TrainError> {
    if weights.len() != head.dim * head.classes || bias.len() != head.classes {
        return Err(bad("new head of the wrong size"));
    }
    let m = parse(onnx)?;
    let keep = m.ancestors(&head.feature);
    let used: BTreeSet<&str> = keep
        .iter()
        .flat_map(|i| m.nodes[*i].inputs.iter().map(String::as_str))
        .collect();
    let produced: BTreeSet<&str> = keep
        .iter()
        .flat_map(|i| m.nodes[*i].outputs.iter().map(String::as_str))
        .collect();
    let mut graph = Vec::new();
    let mut node_i = 0;
    for f in &m.graph {
        match f.number {
            1 => {
                if keep.contains(&node_i) {
                    graph.extend_from_slice(f.raw);
                }
                node_i += 1;
            }
            5 => {
                let name = wire::string(&wire::fields(f.payload)?, 8);
                if used.contains(name.as_str()) {
                    graph.extend_from_slice(f.raw);
                }
            }
            13 => {
                let name = wire::string(&wire::fields(f.payload)?, 1);
                if produced.contains(name.as_str()) {
                    graph.extend_from_slice(f.raw);
                }
            }
            _ => graph.extend_from_slice(f.raw),
        }
    }
    let gemm_out = if softmax {
        LOGITS
    } else {
        head.output.as_str()
    };
    let nodes = [
        wire::node(
            "Gemm",
            "tandem.head.gemm",
            &[&head.feature, W_NAME, B_NAME],
            &[gemm_out],
            &[],
        ),
        wire::node(
            "Softmax",
            "tandem.head.softmax",
            &[LOGITS],
            &[&head.output],
            &[("axis", -1)],
        ),
    ];
    for n in nodes.iter().take(if softmax { 2 } else { 1 }) {
        wire::put_bytes(&mut graph, 1, n);
    }
    wire::put_bytes(
        &mut graph,
        5,
        &wire::float_tensor(W_NAME, &[head.dim, head.classes], weights),
    );
    wire::put_bytes(
        &mut graph,
        5,
        &wire::float_tensor(B_NAME, &[head.classes], bias),
    );
    Ok(with_graph(&m, &graph))
}
