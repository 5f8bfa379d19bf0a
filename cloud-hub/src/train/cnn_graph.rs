//! A serving ONNX graph as a [`Cnn`] and back (pure: no IO): the chain of `Conv` (3×3, stride
//! 1, padding 1), `Relu`, `MaxPool` (2×2, stride 2), `GlobalAveragePool`, `Flatten` and a final
//! `Gemm` from the graph's input to its first output, read through the (de)quantization the
//! quantizer left (weights of a QDQ graph dequantized to FP32); and a trained network written
//! as a new FP32 graph with the same input and output (names, types, shapes) and the same
//! opsets, so devices run it unchanged. Any other op: the graph is not one this trainer reads
//! (the caller trains the head alone).

use super::TrainError;
use super::cnn::{Cnn, Layer};
use super::graph::{self, Model, Node};
use super::wire;

fn bad(msg: impl Into<String>) -> TrainError {
    TrainError::Onnx(msg.into())
}

/// The graph's first input that is not an initializer, as (name, its raw `ValueInfoProto`).
fn graph_input<'a>(m: &Model<'a>) -> Result<(String, &'a [u8]), TrainError> {
    for f in m.graph.iter().filter(|f| f.number == 11) {
        let name = wire::string(&wire::fields(f.payload)?, 1);
        if m.resolve(&name).is_none() {
            return Ok((name, f.raw));
        }
    }
    Err(bad("the graph has no input"))
}

fn is_qdq(op: &str) -> bool {
    matches!(op, "QuantizeLinear" | "DequantizeLinear")
}

/// Checks that `n`'s INTS attribute `name` is absent (`default`) or all `want`.
fn attr_is(n: &Node<'_>, name: &str, want: i64, default: bool) -> bool {
    match n.ints_attr(name) {
        Some(v) => v.iter().all(|x| *x == want),
        None => default,
    }
}

/// The network from the graph's input to its first output in `onnx`, for inputs of
/// `[channels, height, width]`.
pub fn read(
    onnx: &[u8],
    (channels, height, width): (usize, usize, usize),
) -> Result<Cnn, TrainError> {
    let m = graph::parse(onnx)?;
    let (mut cur, _) = graph_input(&m)?;
    let output = m.first_output()?;
    let mut layers = Vec::new();
    for _ in 0..m.nodes.len() + 1 {
        if cur == output {
            let net = Cnn {
                channels,
                height,
                width,
                layers,
            };
            net.check().map_err(|e| bad(e.to_string()))?;
            return Ok(net);
        }
        let next = m.consumers(&cur);
        let [i] = next[..] else {
            return Err(bad(format!("`{cur}` feeds {} nodes, not one", next.len())));
        };
        let n = &m.nodes[i];
        let out = n.outputs.first().cloned().unwrap_or_default();
        if is_qdq(&n.op) {
            // A ReLU the quantizer folded into the activation's range.
            if n.op == "QuantizeLinear"
                && m.clamps_at_zero(n)
                && matches!(
                    layers.last(),
                    Some(Layer::Conv { .. } | Layer::Linear { .. })
                )
            {
                layers.push(Layer::Relu);
            }
            cur = out;
            continue;
        }
        if n.inputs.first() != Some(&cur) {
            return Err(bad(format!("{} reads `{cur}` as a parameter", n.op)));
        }
        let param = |k: usize| {
            n.inputs
                .get(k)
                .filter(|s| !s.is_empty())
                .map(|s| m.resolve(s))
        };
        match n.op.as_str() {
            "Conv" => {
                let ok = attr_is(n, "kernel_shape", 3, true)
                    && attr_is(n, "pads", 1, false)
                    && attr_is(n, "strides", 1, true)
                    && attr_is(n, "dilations", 1, true)
                    && n.int_attr("group").unwrap_or(1) == 1;
                let Some(Some((w, dims))) = param(1) else {
                    return Err(bad("a Conv weight that is not a constant"));
                };
                let [cout, cin, 3, 3] = dims[..] else {
                    return Err(bad(format!("a Conv weight of shape {dims:?}")));
                };
                if !ok {
                    return Err(bad("a Conv other than 3×3, stride 1, padding 1"));
                }
                let (cin, cout) = (cin as usize, cout as usize);
                let b = match param(2) {
                    Some(Some((b, _))) => b,
                    Some(None) => return Err(bad("a Conv bias that is not a constant")),
                    None => vec![0.0; cout],
                };
                layers.push(Layer::Conv { cin, cout, w, b });
            }
            "Relu" => layers.push(Layer::Relu),
            "MaxPool" => {
                if !(attr_is(n, "kernel_shape", 2, false)
                    && attr_is(n, "strides", 2, false)
                    && attr_is(n, "pads", 0, true))
                {
                    return Err(bad("a MaxPool other than 2×2, stride 2"));
                }
                layers.push(Layer::MaxPool);
            }
            "GlobalAveragePool" => layers.push(Layer::GlobalAvgPool),
            "Flatten" if n.int_attr("axis").unwrap_or(1) == 1 => {}
            "Gemm" => {
                let Some(Some((w, dims))) = param(1) else {
                    return Err(bad("a Gemm weight that is not a constant"));
                };
                let [r, c] = dims[..] else {
                    return Err(bad(format!("a Gemm weight of shape {dims:?}")));
                };
                let (r, c) = (r as usize, c as usize);
                let (classes, dim, w) = if n.int_attr("transB") == Some(1) {
                    (r, c, w)
                } else {
                    let mut t = vec![0.0; w.len()];
                    for i in 0..r {
                        for j in 0..c {
                            t[j * r + i] = w[i * c + j];
                        }
                    }
                    (c, r, t)
                };
                if n.int_attr("transA").unwrap_or(0) != 0 {
                    return Err(bad("a Gemm with transA"));
                }
                let b = match param(2) {
                    Some(Some((b, _))) => b,
                    Some(None) => return Err(bad("a Gemm bias that is not a constant")),
                    None => vec![0.0; classes],
                };
                layers.push(Layer::Linear { dim, classes, w, b });
            }
            op => {
                return Err(bad(format!(
                    "op {op}: not a network the whole-net trainer reads"
                )));
            }
        }
        cur = out;
    }
    Err(bad("the chain from the input does not reach the output"))
}

/// `onnx` (the graph `net` was read from) with its graph replaced by `net` in FP32: the same
/// input and first output, every other graph field (nodes, initializers, other outputs) new.
pub fn write(onnx: &[u8], net: &Cnn) -> Result<Vec<u8>, TrainError> {
    net.check().map_err(|e| bad(e.to_string()))?;
    let m = graph::parse(onnx)?;
    let (input, input_info) = graph_input(&m)?;
    let output = m.first_output()?;
    let output_info = m
        .graph
        .iter()
        .find(|f| f.number == 12)
        .map(|f| f.raw)
        .ok_or_else(|| bad("the graph has no output"))?;
    let mut g = Vec::new();
    let mut cur = input;
    let last = net.layers.len() - 1;
    for (i, l) in net.layers.iter().enumerate() {
        let out = if i == last {
            output.clone()
        } else {
            format!("tandem.net.{i}")
        };
        let name = format!("tandem.net.node{i}");
        let (w_name, b_name) = (
            format!("tandem.net.{i}.weight"),
            format!("tandem.net.{i}.bias"),
        );
        match l {
            Layer::Conv { cin, cout, w, b } => {
                wire::put_bytes(
                    &mut g,
                    1,
                    &wire::node_ints(
                        "Conv",
                        &name,
                        &[&cur, &w_name, &b_name],
                        &[&out],
                        &[
                            ("kernel_shape", &[3, 3]),
                            ("pads", &[1, 1, 1, 1]),
                            ("strides", &[1, 1]),
                        ],
                    ),
                );
                wire::put_bytes(
                    &mut g,
                    5,
                    &wire::float_tensor(&w_name, &[*cout, *cin, 3, 3], w),
                );
                wire::put_bytes(&mut g, 5, &wire::float_tensor(&b_name, &[*cout], b));
            }
            Layer::Relu => {
                wire::put_bytes(&mut g, 1, &wire::node("Relu", &name, &[&cur], &[&out], &[]))
            }
            Layer::MaxPool => wire::put_bytes(
                &mut g,
                1,
                &wire::node_ints(
                    "MaxPool",
                    &name,
                    &[&cur],
                    &[&out],
                    &[("kernel_shape", &[2, 2]), ("strides", &[2, 2])],
                ),
            ),
            Layer::GlobalAvgPool => wire::put_bytes(
                &mut g,
                1,
                &wire::node("GlobalAveragePool", &name, &[&cur], &[&out], &[]),
            ),
            Layer::Linear { dim, classes, w, b } => {
                let flat = format!("tandem.net.{i}.flat");
                let fname = format!("tandem.net.node{i}.flatten");
                wire::put_bytes(
                    &mut g,
                    1,
                    &wire::node("Flatten", &fname, &[&cur], &[&flat], &[("axis", 1)]),
                );
                wire::put_bytes(
                    &mut g,
                    1,
                    &wire::node(
                        "Gemm",
                        &name,
                        &[&flat, &w_name, &b_name],
                        &[&out],
                        &[("transB", 1)],
                    ),
                );
                wire::put_bytes(
                    &mut g,
                    5,
                    &wire::float_tensor(&w_name, &[*classes, *dim], w),
                );
                wire::put_bytes(&mut g, 5, &wire::float_tensor(&b_name, &[*classes], b));
            }
        }
        cur = out;
    }
    wire::put_bytes(&mut g, 2, b"tandem-trained");
    g.extend_from_slice(input_info);
    g.extend_from_slice(output_info);
    Ok(graph::with_graph(&m, &g))
}
