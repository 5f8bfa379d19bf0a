#!/usr/bin/env python3
"""Build models/vision-fashion: train the edge/cloud CNN pair on Fashion-MNIST, export to ONNX
(opset 17), quantize the edge model (static QDQ, per-channel INT8), measure accuracy with
onnxruntime 1.31.1 on the 10,000 t10k images, and write samples, test data and manifest.json.

Data: Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/*.gz, MIT).
Checkpoints are cached in models/.build/ (git-ignored); pass --retrain to train again.
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SEED = 20261130
SRC = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(common.MODELS_DIR, "vision-fashion")
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD, SCALE = 0.286, 0.353, 1.0 / 255.0
THRESHOLD = 0.7


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def normalize(u8):
    """uint8 [N,28,28] -> float32 [N,1,28,28], value = (pixel*scale - mean)/std."""
    x = u8.astype(np.float32) * np.float32(SCALE)
    return ((x - np.float32(MEAN)) / np.float32(STD))[:, None, :, :].astype(np.float32)


def train(net_name, epochs, lr, batch, xtr, ytr, threads):
    import torch
    import torch.nn.functional as F

    import fashion_nets

    common.seed_everything(SEED)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    net = getattr(fashion_nets, net_name)()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    X = torch.from_numpy(normalize(xtr))
    Y = torch.from_numpy(ytr.astype(np.int64))
    g = torch.Generator().manual_seed(SEED)
    for ep in range(epochs):
        net.train()
        t0, tot, n = time.time(), 0.0, 0
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            xb, yb = X[idx], Y[idx]
            flip = torch.rand(len(xb), generator=g) < 0.5  # horizontal flip augmentation
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad()
            loss = F.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(xb)
            n += len(xb)
        print(f"[{net_name}] epoch {ep + 1}/{epochs} loss {tot / n:.4f} {time.time() - t0:.0f}s", flush=True)
    net.eval()
    return net


def export(net, path):
    import torch

    torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    common.fix_ir_version(path)


def quantize_edge(fp32_path, out_path, calib):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prep = fp32_path.replace(".onnx", "-prep.onnx")
    quant_pre_process(fp32_path, prep)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 50]} for i in range(0, len(calib), 50)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(prep, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    common.fix_ir_version(out_path)


def run_logits(path, x, batch=500):
    s = common.ort_session(path)
    return np.concatenate([s.run(["logits"], {"input": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--edge-epochs", type=int, default=12)
    ap.add_argument("--cloud-epochs", type=int, default=8)
    args = ap.parse_args()

    import torch
    from PIL import Image

    os.makedirs(common.CACHE_DIR, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)
    xtr = read_idx(f"{SRC}/train-images-idx3-ubyte.gz")
    ytr = read_idx(f"{SRC}/train-labels-idx1-ubyte.gz")

    # --- train (cached) -----------------------------------------------------------------
    import fashion_nets
    nets = {}
    for variant, name, epochs, lr in (("edge", "EdgeNet", args.edge_epochs, 4e-3),
                                      ("cloud", "CloudNet", args.cloud_epochs, 3e-3)):
        ck = os.path.join(common.CACHE_DIR, f"fashion-{variant}-e{epochs}.pt")
        if os.path.exists(ck) and not args.retrain:
            net = getattr(fashion_nets, name)()
            net.load_state_dict(torch.load(ck))
            net.eval()
        else:
            t0 = time.time()
            net = train(name, epochs, lr, 256, xtr, ytr, args.threads)
            torch.save(net.state_dict(), ck)
            print(f"[{name}] trained in {time.time() - t0:.0f}s", flush=True)
        nets[variant] = net

    # --- export + quantize ----------------------------------------------------------------
    edge_fp32 = os.path.join(common.CACHE_DIR, "fashion-edge-fp32.onnx")
    export(nets["edge"], edge_fp32)
    export(nets["cloud"], os.path.join(OUT, "cloud.onnx"))
    rng = np.random.default_rng(SEED)
    calib = normalize(xtr[rng.choice(len(xtr), 1000, replace=False)])  # training images only
    quantize_edge(edge_fp32, os.path.join(OUT, "edge.onnx"), calib)

    # --- data, labels ---------------------------------------------------------------------
    data_dir = os.path.join(OUT, "data")
    os.makedirs(data_dir, exist_ok=True)
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(f"{SRC}/{f}", os.path.join(data_dir, f))
    with open(os.path.join(OUT, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    xte = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))
    yte = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    X = normalize(xte)

    # --- accuracy (onnxruntime on the ONNX files) -----------------------------------------
    logits = {v: run_logits(os.path.join(OUT, f"{v}.onnx"), X) for v in ("edge", "cloud")}
    fp32_edge_acc = float((run_logits(edge_fp32, X).argmax(1) == yte).mean())
    acc = {v: float((logits[v].argmax(1) == yte).mean()) for v in logits}
    print(f"accuracy: edge int8 {acc['edge']:.4f} (fp32 {fp32_edge_acc:.4f}), cloud {acc['cloud']:.4f}")
    pe, pc = common.softmax(logits["edge"]), common.softmax(logits["cloud"])
    conf = pe.max(1)
    cascade = []
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        off = conf < t
        pred = np.where(off, pc.argmax(1), pe.argmax(1))
        cascade.append({"threshold": t, "offloaded": round(float(off.mean()), 4),
                        "top1": round(float((pred == yte).mean()), 4)})
        print("cascade", cascade[-1])

    # --- samples: the first test image of each class --------------------------------------
    sdir = os.path.join(OUT, "samples")
    shutil.rmtree(sdir, ignore_errors=True)
    os.makedirs(sdir)
    samples = []
    for c in range(10):
        i = int(np.nonzero(yte == c)[0][0])
        name = f"samples/{i}_{c}.png"
        Image.fromarray(xte[i], mode="L").save(os.path.join(OUT, name))
        samples.append(name)
    samples.sort(key=lambda s: int(os.path.basename(s).split("_")[0]))

    def load_sample(rel):
        img = Image.open(os.path.join(OUT, rel)).convert("L")
        if img.size != (28, 28):
            img = img.resize((28, 28), Image.BILINEAR)
        return normalize(np.asarray(img, dtype=np.uint8)[None])

    # --- testdata -------------------------------------------------------------------------
    tdir = os.path.join(OUT, "testdata")
    shutil.rmtree(tdir, ignore_errors=True)
    os.makedirs(os.path.join(tdir, "ref"))
    ref_cases, exp_cases = [], []
    for v in ("edge", "cloud"):
        s = common.ort_session(os.path.join(OUT, f"{v}.onnx"))
        for k, rel in enumerate(samples[:5]):
            x = load_sample(rel)
            fn = f"testdata/ref/{v}-{k}-input.bin"
            common.write_bin(os.path.join(OUT, fn), x)
            y = s.run(["logits"], {"input": x})[0]
            ref_cases.append({"variant": v, "source": rel,
                              "inputs": [{"name": "input", "dtype": "float32", "shape": list(x.shape), "file": fn}],
                              "outputs": [{"name": "logits", "shape": list(y.shape), "data": [float(a) for a in y.ravel()]}]})
        for rel in samples:
            p = common.softmax(s.run(["logits"], {"input": load_sample(rel)})[0])[0]
            k = int(p.argmax())
            exp_cases.append({"variant": v, "input": rel, "top1": LABELS[k], "top1_index": k, "score": float(p[k]),
                              "true_index": int(os.path.basename(rel).split("_")[1].split(".")[0])})
    common.write_json(os.path.join(tdir, "reference.json"), {"onnxruntime": common.ORT_VERSION, "cases": ref_cases})
    common.write_json(os.path.join(tdir, "expected.json"), {"onnxruntime": common.ORT_VERSION, "cases": exp_cases})

    # --- manifest -------------------------------------------------------------------------
    pre = {"type": "image", "layout": "NCHW", "color": "gray", "width": 28, "height": 28, "resize": "stretch",
           "shorter_side": None, "scale": SCALE, "mean": [MEAN], "std": [STD]}
    chosen = next(c for c in cascade if c["threshold"] == THRESHOLD)
    variants = {}
    for v, quant in (("edge", "int8-static-qdq-per-channel"), ("cloud", "none")):
        path = os.path.join(OUT, f"{v}.onnx")
        ins, outs = common.onnx_io(path)
        for o in outs:
            o["kind"] = "logits"
        params = sum(p.numel() for p in nets[v].parameters())
        variants[v] = {
            "file": f"{v}.onnx", "optional": False, "quantization": quant, "params": int(params),
            "threshold": THRESHOLD, "threshold_signal": "max_prob",
            "inputs": ins, "outputs": outs, "preprocess": pre,
            "accuracy": {"dataset": "data/fashion-mnist-t10k", "samples": int(len(yte)), "top1": round(acc[v], 4)},
        }
    variants["edge"]["accuracy"]["top1_fp32_before_quantization"] = round(fp32_edge_acc, 4)
    manifest = {
        "manifest_version": 1, "name": "vision-fashion", "version": "1.0.0", "task": "image-classification",
        "description": "Fashion-MNIST small CNN pair (edge INT8 ~24k params, cloud FP32 ~230k params)",
        "labels": "labels.txt", "variants": variants,
        "cascade": {"signal": "max_prob", "dataset": "data/fashion-mnist-t10k", "chosen_threshold": THRESHOLD,
                    "offloaded": chosen["offloaded"], "top1": chosen["top1"], "sweep": cascade},
        "files": common.files_sha256(OUT),
    }
    common.write_json(os.path.join(OUT, "manifest.json"), manifest)
    print(json.dumps({k: manifest[k] for k in ("cascade",)}, indent=1))


if __name__ == "__main__":
    main()
