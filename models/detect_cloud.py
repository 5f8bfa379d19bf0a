"""detect-coco's cloud variant: NanoDet-g FP32 at two scales in one graph, and the measurement
that chose it on the labelled set (docs/benchmarks/detect.md, "A stronger cloud detector").

The chosen recipe (`two_scale`): the FP32 net as converted (`nanodet-g`, any input that is a
multiple of 32) runs on the model input (608 x 608) and, in the same graph, on that input
resized to 416 x 416 (ONNX `Resize`, linear, half-pixel: the normalised tensor, which a
linear resize commutes with). The second branch's six outputs are named `<name>_s416`; the
manifest declares them as three more NanoDet levels with `input_size: [416, 416]`, so the
shared decoder (tandem_shared::detect::decode) scales their boxes back to the model input and
one per-class NMS merges both scales' candidates. The weights are shared (one copy in the
file). NanoDet's box distances stop at reg_max x stride (320 px at stride 32), so at 608 a
large object is cut into parts while small ones gain resolution; the 416 branch keeps the
large ones: each scale alone is no better than 416 (table below), together they are.
`mirrored` adds the same graph on the mirror image of the input (flip TTA, the shipped cloud
since session 13); `two_scale` on the INT8 file is the shipped edge.

`multi_scale` adds more in-graph scales (608 + 416 + 320: `cloud-3s-m` of
models/detect-coco-edges/, mirrored; measurably stronger than the edge, not shipped: the
cascade's ratio falls to 0.93, docs/benchmarks/detect.md, "a stronger hub after the centre fix").

    .venv/bin/python models/detect_cloud.py          # the candidates table (labelled set)
    .venv/bin/python models/detect_cloud.py 320      # the shipped pair and the rows naming 320

The table: every candidate through detection_ref.py's pipeline (PIL resize, the engine's
steps, the manifest's decoding: cell centres at (x + 0.5) * stride) on the object photos of
detection-set, mAP@0.5 of the boxes >= 0.2 (the cloud's answer threshold) as `make
bench-detect` computes it, on the photos and on their mirror images (the flip changes no
model, only which boxes land over 0.5 IoU: the set's noise), recall, the single-thread CPU
time of the passes per frame (tiles: k x k crops overlapping by 0.2, each stretched to the
pass's size) and that time over the shipped cloud's. The shipped edge runs as its committed
INT8 file; every row gets a paired bootstrap over photos against it (the same 300 resamples
for every row): its mean and 90% interval.
"""
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detection_ref as R  # noqa: E402
from detect_settings import evaluate, iou, load_set  # noqa: E402

HERE = Path(__file__).parent
SMALL = 416  # the in-graph branch's input size
SUFFIX = f"_s{SMALL}"  # the branch's output names: cls_8_s416, ... (nodes: s416/...)
FLIP_PREFIX = "flip/"  # the mirrored branch's nodes and tensors (mirrored())
FLIP_SUFFIX = "_flip"  # its output names: cls_8_flip, cls_8_s416_flip, ...
SEED = 20261130


def _is_branch(name: str) -> bool:
    """Whether a node or output name belongs to a branch added by two_scale() or mirrored()."""
    return bool(re.match(r"^(s\d+|flip)/", name) or re.search(r"_(s\d+|flip)$", name))


def _add_branch(path: str, out: str, prefix: str, suffix: str, head, base_only=False) -> None:
    """Writes `out`: the graph `path` and, in the same graph, a copy of it (nodes and tensors
    named `prefix` + name, outputs name + `suffix`, weights shared) on the tensor `prefix` +
    input, which `head(graph, input name, that tensor)` makes from the input (its nodes).
    `base_only`: copy only the plain net, not the branches the file already has."""
    import onnx

    m = onnx.load(path)
    g = m.graph
    inits = {i.name for i in g.initializer}
    (inp,) = [i for i in g.input if i.name not in inits]
    outs = [o for o in g.output if not (base_only and _is_branch(o.name))]
    named = {o.name: o.name + suffix for o in outs}
    rename = lambda n: n if n in inits or n == "" else named.get(n, prefix + n)  # noqa: E731
    copies = []
    for n in g.node:
        if base_only and _is_branch(n.name):
            continue
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = prefix + n.name
        c.input[:] = [rename(i) for i in n.input]
        c.output[:] = [rename(o) for o in n.output]
        copies.append(c)
    g.node.extend(head(g, inp.name, prefix + inp.name) + copies)
    for o in outs:
        v = onnx.ValueInfoProto()
        v.CopyFrom(o)
        v.name = o.name + suffix
        g.output.append(v)
    onnx.checker.check_model(m)
    onnx.save(m, out)


def two_scale(fp32: str, out: str, small: int = SMALL) -> None:
    """Writes `out`: the net `fp32` on its input and, in the same graph, the plain net on the
    input resized to small x small (weights shared), outputs of the second named `*_s<small>`.
    On a two-scale file it adds a third scale (multi_scale)."""
    from onnx import TensorProto, helper

    prefix = f"s{small}/"

    def resize(g, inp, resized):
        g.initializer.append(helper.make_tensor(prefix + "hw", TensorProto.INT64, [2], [small, small]))
        g.initializer.append(helper.make_tensor(prefix + "zero", TensorProto.INT64, [1], [0]))
        g.initializer.append(helper.make_tensor(prefix + "two", TensorProto.INT64, [1], [2]))
        return [
            helper.make_node("Shape", [inp], [prefix + "shape"], name=prefix + "shape"),
            helper.make_node("Slice", [prefix + "shape", prefix + "zero", prefix + "two"],
                             [prefix + "nc"], name=prefix + "nc"),
            helper.make_node("Concat", [prefix + "nc", prefix + "hw"], [prefix + "sizes"], axis=0,
                             name=prefix + "sizes"),
            helper.make_node("Resize", [inp, "", "", prefix + "sizes"], [resized],
                             mode="linear", coordinate_transformation_mode="half_pixel",
                             name=prefix + "resize"),
        ]

    _add_branch(fp32, out, prefix, f"_s{small}", resize, base_only=True)


def multi_scale(fp32: str, out: str, smalls=(SMALL,)) -> None:
    """Writes `out`: the net `fp32` on its input and on it resized to each of `smalls`."""
    src = fp32
    for small in smalls:
        two_scale(src, out, small)
        src = out


def mirrored(path: str, out: str) -> None:
    """Writes `out`: the graph `path` (any of the files above) and, in the same graph, the same
    graph on its input mirrored left-right (ONNX `Slice`, step -1 on the width; weights
    shared): test-time augmentation. The mirrored branch's outputs are named `*_flip`; the
    manifest declares them as more levels with `mirrored: true` (mirrored_levels()), whose
    boxes the decoder mirrors back before one NMS merges every branch's candidates."""
    from onnx import TensorProto, helper

    def flip(g, inp, flipped):
        for name, v in (("start", -1), ("end", -(2 ** 63) + 1), ("axis", 3), ("step", -1)):
            g.initializer.append(helper.make_tensor(FLIP_PREFIX + name, TensorProto.INT64, [1], [v]))
        return [helper.make_node("Slice", [inp] + [FLIP_PREFIX + n for n in ("start", "end", "axis", "step")],
                                 [flipped], name=FLIP_PREFIX + "mirror")]

    _add_branch(path, out, FLIP_PREFIX, FLIP_SUFFIX, flip)


def mirrored_levels(levels: list) -> list:
    """The manifest's levels for a mirrored() file: the graph's own, then the mirrored ones."""
    return levels + [{**lvl, "scores": lvl["scores"] + FLIP_SUFFIX, "boxes": lvl["boxes"] + FLIP_SUFFIX,
                      "mirrored": True} for lvl in levels]


def single_scale(cloud: str, out: str) -> None:
    """Writes `out`: the plain net of a two-scale (and mirrored) file (its first branch), for
    quantising the edge file from the committed cloud.onnx (build_detection.py,
    detect_quant.py)."""
    import onnx

    m = onnx.load(cloud)
    g = m.graph
    keep = [n for n in g.node if not _is_branch(n.name)]
    del g.node[:]
    g.node.extend(keep)
    outs = [o for o in g.output if not _is_branch(o.name)]
    del g.output[:]
    g.output.extend(outs)
    inits = [i for i in g.initializer if not _is_branch(i.name)]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.save(m, out)


def levels(decode: dict, smalls=(SMALL,)) -> list:
    """The manifest's levels for a two-scale (multi_scale) file: the net's own, then each
    branch's, in the order of `smalls`."""
    return decode["levels"] + [{**lvl, "scores": f"{lvl['scores']}_s{small}", "boxes": f"{lvl['boxes']}_s{small}",
                                "input_size": [small, small]} for small in smalls for lvl in decode["levels"]]


# ---- the measurement -------------------------------------------------------------------------

def _session(path: str, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class Passes:
    """Raw candidates of the FP32 net in image pixels, one pass at a time (cached)."""

    def __init__(self, fp32: str, pre: dict, decode: dict):
        import onnx
        from onnx import TensorProto, helper

        self.sess = _session(fp32, threads=1)
        self.names = [o.name for o in self.sess.get_outputs()]
        self.pre, self.dec = pre, {**decode, "score_threshold": 0.05}
        self.cpu_ms = {}
        g = helper.make_graph(
            [helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                              coordinate_transformation_mode="half_pixel")], "resize",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None]),
             helper.make_tensor_value_info("sz", TensorProto.INT64, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        rm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        rm.ir_version = 8
        import onnxruntime as ort

        self.resize = ort.InferenceSession(rm.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(self, rgb, size, flip=False, crop=None, down=None):
        """One pass: the photo (or `crop` of it) stretched to size x size (`down`: then resized
        in-graph style to down x down), mirrored when `flip`; boxes, scores, classes."""
        H, W = rgb.shape[:2]
        ox = oy = 0
        if crop:
            x0, y0, x1, y1 = crop
            rgb, ox, oy = np.ascontiguousarray(rgb[y0:y1, x0:x1]), x0, y0
        x, geo = R.preprocess(rgb, {**self.pre, "width": size, "height": size})
        n = size
        if down:
            x = self.resize.run(None, {"x": x, "sz": np.array([1, 3, down, down], np.int64)})[0]
            n = down
        if flip:
            x = np.ascontiguousarray(x[..., ::-1])
        t = time.thread_time()
        outs = dict(zip(self.names, self.sess.run(None, {"input": x})))
        self.cpu_ms.setdefault(n, []).append((time.thread_time() - t) * 1000)
        b, s, c = R.decode_nanodet(outs, self.dec, n, n)
        b = np.array(b, np.float64).reshape(-1, 4)
        if flip:
            b = np.stack([n - b[:, 2], b[:, 1], n - b[:, 0], b[:, 3]], 1)
        k = size / n
        b = b * k / [geo["sx"], geo["sy"], geo["sx"], geo["sy"]] + [ox, oy, ox, oy]
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, W)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, H)
        return b, np.array(s, np.float64), np.array(c, int)


def tiles(w, h, grid=2, overlap=0.2):
    """grid x grid crops covering the photo, neighbours overlapping by `overlap` of a crop."""
    tw, th = w / (grid - (grid - 1) * overlap), h / (grid - (grid - 1) * overlap)
    return [(int(i * tw * (1 - overlap)), int(j * th * (1 - overlap)),
             min(w, int(i * tw * (1 - overlap) + tw)), min(h, int(j * th * (1 - overlap) + th)))
            for j in range(grid) for i in range(grid)]


class Shipped:
    """A committed detect-coco file as it ships (its manifest's levels, all branches in one
    graph) through the reference pipeline at 0.05, boxes in image pixels; thread CPU time."""

    def __init__(self, path: str, pre: dict, decode: dict):
        self.sess = _session(path, threads=1)
        self.names = [o.name for o in self.sess.get_outputs()]
        self.pre, self.dec = pre, {**decode, "score_threshold": 0.05}
        self.cpu_ms = []

    def run(self, rgb):
        x, geo = R.preprocess(rgb, self.pre)
        t = time.thread_time()
        outs = dict(zip(self.names, self.sess.run(None, {"input": x})))
        self.cpu_ms.append((time.thread_time() - t) * 1000)
        n = self.pre["width"]
        b, s, c = R.decode_nanodet(outs, self.dec, n, n)
        b = np.array(b, np.float64).reshape(-1, 4)
        b = (b - [geo["ox"], geo["oy"], geo["ox"], geo["oy"]]) / [geo["sx"], geo["sy"], geo["sx"], geo["sy"]]
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, geo["w"])
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, geo["h"])
        return b, np.array(s, np.float64), np.array(c, int)


def merge(passes, labels, thr=0.2, iou_thr=0.5):
    """The candidates of several passes, one per-class NMS (the engine's), boxes > thr."""
    b = np.concatenate([p[0] for p in passes])
    s = np.concatenate([p[1] for p in passes])
    c = np.concatenate([p[2] for p in passes])
    m = s > thr
    b, s, c = b[m], s[m], c[m]
    if not len(s):
        return []
    keep = R.nms(b, list(s), list(c), iou_thr, 100)
    return [(labels[c[k]], list(b[k]), float(s[k])) for k in keep]


def recall(truth, preds):
    tp = 0
    for ts, ps in zip(truth, preds):
        used = set()
        for lab, b, _ in sorted(ps, key=lambda p: -p[2]):
            cand = [(j, iou(b, g)) for j, (gl, g) in enumerate(ts) if gl == lab and j not in used]
            best = max(cand, key=lambda x: x[1], default=None)
            if best and best[1] >= 0.5:
                used.add(best[0])
                tp += 1
    return tp / max(sum(map(len, truth)), 1)


# name -> passes: (size, in-graph down size or None, flipped, tiles: 0 = the whole photo, k = k x k
# crops overlapping by 0.2, each stretched to size x size); EDGE: the committed INT8 edge.onnx.
EDGE = "shipped edge (INT8 608+416 file)"
TWO = [(608, None, False, 0), (608, 416, False, 0)]
CLOUD = TWO + [(608, None, True, 0), (608, 416, True, 0)]
CANDIDATES = {
    EDGE: None,
    "FP32 416 (the cloud before)": [(416, None, False, 0)],
    "FP32 608": [(608, None, False, 0)],
    "608 + 608->416 (FP32 2-scale)": TWO,
    "2-scale + flips (shipped cloud)": CLOUD,
    "2-scale + 320": TWO + [(320, None, False, 0)],
    "shipped cloud + 320 + flip": CLOUD + [(320, None, False, 0), (320, None, True, 0)],
    "2-scale + 608->320 in graph": TWO + [(608, 320, False, 0)],
    "shipped cloud + 608->320 + flip": CLOUD + [(608, 320, False, 0), (608, 320, True, 0)],
    "2-scale + 2x2 tiles at 416": TWO + [(416, None, False, 2)],
    "2-scale + 2x2 tiles at 608": TWO + [(608, None, False, 2)],
    "2-scale + 3x3 tiles at 416": TWO + [(416, None, False, 3)],
    "shipped cloud + 2x2 at 416": CLOUD + [(416, None, False, 2)],
    "shipped cloud + 2x2 at 608": CLOUD + [(608, None, False, 2)],
    "shipped cloud + 2x2 at 416 + flip": CLOUD + [(416, None, False, 2), (416, None, True, 2)],
}
SHIPPED_CLOUD = "2-scale + flips (shipped cloud)"
RESAMPLES = 300


def main():
    man, labels, images, truth = load_set()
    v = man["variants"]["edge"]
    fp32 = os.path.join(HERE, ".build", "detection", "nanodet-fp32.onnx")
    if not os.path.exists(fp32):
        os.makedirs(os.path.dirname(fp32), exist_ok=True)
        single_scale(str(HERE / "detect-coco" / "cloud.onnx"), fp32)
    decode = {**v["detection"]["decode"], "levels": [
        lvl for lvl in v["detection"]["decode"]["levels"] if "input_size" not in lvl]}
    P = Passes(fp32, v["preprocess"], decode)
    E = Shipped(str(HERE / "detect-coco" / v["file"]), v["preprocess"], v["detection"]["decode"])
    rgbs = [R.load_rgb(str(HERE / "detection-set" / im["file"])) for im in images]
    mirrored = [np.ascontiguousarray(r[:, ::-1]) for r in rgbs]
    ftruth = [[(lab, [r.shape[1] - b[2], b[1], r.shape[1] - b[0], b[3]]) for lab, b in ts]
              for r, ts in zip(rgbs, truth)]
    cache = {}

    def one(i, flipset, size, down, flip, grid):
        key = (i, flipset, size, down, flip, grid)
        if key not in cache:
            rgb = (mirrored if flipset else rgbs)[i]
            if size == "edge":
                cache[key] = E.run(rgb)
            elif grid:
                h, w = rgb.shape[:2]
                ps = [P.run(rgb, size, flip, crop=t) for t in tiles(w, h, grid)]
                cache[key] = tuple(np.concatenate([p[k] for p in ps]) for k in range(3))
            else:
                cache[key] = P.run(rgb, size, flip, down=down)
        return cache[key]

    def cpu(passes):
        if passes is None:
            return np.median(E.cpu_ms)
        return sum(np.median(P.cpu_ms[d or s]) * (g * g or 1) for s, d, _, g in passes)

    print(f"detect-coco cloud candidates: {len(images)} photos, {sum(map(len, truth))} boxes; "
          f"decode centre offset {decode['center_offset']}; boxes >= 0.2, per-class NMS 0.5 over "
          "all passes")
    chosen = {k: v for k, v in CANDIDATES.items()
              if k in (EDGE, SHIPPED_CLOUD) or not sys.argv[1:] or any(a in k for a in sys.argv[1:])}
    preds, rows = {}, {}
    for name, passes in chosen.items():
        qs = passes or [("edge", None, False, 0)]
        p = [merge([one(i, False, *q) for q in qs], labels) for i in range(len(rgbs))]
        f = [merge([one(i, True, *q) for q in qs], labels) for i in range(len(rgbs))]
        preds[name] = p
        rows[name] = (evaluate(truth, p), evaluate(ftruth, f), recall(truth, p))
        print(f"  measured {name}", file=sys.stderr, flush=True)
    rng = np.random.default_rng(SEED)
    draws = [rng.integers(0, len(rgbs), len(rgbs)) for _ in range(RESAMPLES)]
    base = [evaluate([truth[i] for i in idx], [preds[EDGE][i] for i in idx]) for idx in draws]
    print(f"{'candidate':<36} {'mAP@0.5':>8} {'mirrored':>9} {'mean':>6} {'recall':>7} {'cpu ms':>7}"
          f" {'x cloud':>7}   - shipped edge: mean, 90% interval ({RESAMPLES} paired resamples)")
    for name, passes in chosen.items():
        m, fm, r = rows[name]
        d = np.array([evaluate([truth[i] for i in idx], [preds[name][i] for i in idx]) - b
                      for idx, b in zip(draws, base)])
        print(f"{name:<36} {m:>8.3f} {fm:>9.3f} {(m + fm) / 2:>6.3f} {r:>7.3f} {cpu(passes):>7.1f} "
              f"{cpu(passes) / cpu(CANDIDATES[SHIPPED_CLOUD]):>7.2f}   {d.mean():+.3f} "
              f"[{np.percentile(d, 5):+.3f}, {np.percentile(d, 95):+.3f}]", flush=True)


if __name__ == "__main__":
    main()
