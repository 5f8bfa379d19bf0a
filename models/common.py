"""Shared helpers for the Tandem model build scripts (models/build_*.py)."""
import hashlib
import json
import os
import random

import numpy as np

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
CACHE_DIR = os.path.join(MODELS_DIR, ".build")  # git-ignored: checkpoints, downloads
MAX_IR_VERSION = 10  # onnx 1.23 writes IR 14; ONNX Runtime 1.31 refuses > 13
ORT_VERSION = "1.31.1"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fix_ir_version(path: str, ir_version: int = 8) -> None:
    """Rewrite an ONNX file with an IR version that ONNX Runtime 1.31 accepts."""
    import onnx

    m = onnx.load(path)
    if m.ir_version > MAX_IR_VERSION or m.ir_version != ir_version:
        m.ir_version = min(ir_version, MAX_IR_VERSION)
        m.producer_name = m.producer_name or "tandem-models"
        onnx.save(m, path)
    onnx.checker.check_model(path)


def ort_session(path: str, threads: int = 2):
    import onnxruntime as ort

    assert ort.__version__ == ORT_VERSION, f"need onnxruntime {ORT_VERSION}, got {ort.__version__}"
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def pad_batch(encs, pad_id: int):
    """int64 ids and attention mask [B, longest] of tokenizer encodings, padded on the right."""
    T = max(len(e.ids) for e in encs)
    ids = np.full((len(encs), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(encs), T), dtype=np.int64)
    for r, e in enumerate(encs):
        ids[r, :len(e.ids)] = e.ids
        mask[r, :len(e.ids)] = 1
    return ids, mask


def cascade_sweep(p_edge: np.ndarray, p_cloud: np.ndarray, y: np.ndarray, thresholds=(0.6, 0.7, 0.8, 0.9)) -> list:
    """Edge max_prob below the threshold -> cloud: offloaded share and accuracy per threshold."""
    sweep = []
    for t in thresholds:
        off = p_edge.max(1) < t
        pred = np.where(off, p_cloud.argmax(1), p_edge.argmax(1))
        sweep.append({"threshold": t, "offloaded": round(float(off.mean()), 4), "top1": round(float((pred == y).mean()), 4)})
        print("cascade", sweep[-1])
    return sweep


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_bin(path: str, arr: np.ndarray) -> None:
    """Raw little-endian values (float32 or int64), C order."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.float32:
        arr.astype("<f4").tofile(path)
    elif arr.dtype == np.int64:
        arr.astype("<i8").tofile(path)
    else:
        raise ValueError(f"unsupported dtype {arr.dtype}")


def files_sha256(model_dir: str, exclude=("manifest.json",), include_optional_missing=()) -> dict:
    """sha256 of every file in the model folder (relative paths, sorted), manifest excluded."""
    out = {}
    for root, _dirs, files in os.walk(model_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), model_dir)
            if rel in exclude:
                continue
            out[rel] = sha256_file(os.path.join(root, name))
    return dict(sorted(out.items()))


def onnx_io(path: str):
    """Inputs/outputs of an ONNX file as manifest entries (dynamic dims -> -1)."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    tmap = {1: "float32", 7: "int64", 6: "int32", 2: "uint8", 3: "int8"}

    def entry(v):
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": v.name, "dtype": tmap[t.elem_type], "shape": shape}

    inits = {i.name for i in m.graph.initializer}
    return [entry(v) for v in m.graph.input if v.name not in inits], [entry(v) for v in m.graph.output]


def count_params_onnx(path: str) -> int:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    return int(sum(numpy_helper.to_array(i).size for i in m.graph.initializer))


def calibration_views(files, seed: int, n_crops: int):
    """Each photo (at least 64 px a side) whole, then `n_crops` seeded random crops (40-100 %
    of each side) flipped half the time: PIL RGB images for calibration."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for f in files:
        img = Image.open(f).convert("RGB")
        w, h = img.size
        if min(w, h) < 64:
            continue
        yield img
        for _ in range(n_crops):
            s = rng.uniform(0.4, 1.0)
            cw, ch = int(w * s), int(h * s)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = img.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            yield crop
