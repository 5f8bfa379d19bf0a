#!/usr/bin/env python3
"""Shifted streams for issue 13's loop benchmark (`make bench-loop`), from registry data, seeded.

Text (domain shift): the VADER human-rated sentences (sdist of vaderSentiment==3.3.2, the same
filter, de-duplication and seeded train/test split as build_text.py) keep the domain they come
from: tweets, movie snippets, Amazon reviews, NYT editorials. Written to OUT/text/<domain>.jsonl
as `{"text", "label", "domain", "split"}` (`split`: build_text.py's; the shipped heads were fitted
on `train`, so the unbiased figures are on `test`). For every domain D, an edge head (the same
logistic regression as the shipped one, on the edge's own MiniLM embeddings) is fitted on the
`train` sentences of the other three domains only, and met with D's stream. Printed per domain:
edge accuracy with the shipped head and with the head that never saw D, MPNet's (cloud.onnx)
accuracy, and the offload share and cascade accuracy at the manifest threshold.

Images (camera-like shifts): Fashion-MNIST t10k (models/vision-fashion/data) through the hub's
own shifts (cloud-hub/src/eval/shift.rs: brightness, contrast, blur, noise, jpeg), by running
`tandem-hub eval run --shift ...` for the edge and the cloud variant; printed per shift.

Needs numpy, onnx, onnxruntime and tokenizers (the venv scripts/setup-text-cloud.sh makes has
them), models/text-sentiment/cloud.onnx (`make setup`) and a built tandem-hub.

The loop bench's text stream (`tandem-bench loop --stream text`, the movie snippets) and the
sentences its devices' starting head is fitted on (the `train` split of the other three domains)
are this script's files, committed: `prepare_loop_streams.py --skip-images --text-out
bench/data/loop-text` (what it prints is the measurement docs/benchmarks/loop.md quotes for the
choice of domain; `--files-only` writes the files alone).

Usage: prepare_loop_streams.py [--out DIR] [--hub PATH] [--images N] [--per-domain N]
                               [--text-out DIR] [--domains D,...] [--files-only]
                               [--skip-text|--skip-images]
"""
import argparse
import hashlib
import html
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_text  # noqa: E402  (SEED, the sdist, the split, encode1)
import common  # noqa: E402

TEXT = build_text.OUT
DOMAINS = {  # file in hutto_ICWSM_2014.tar.gz -> domain
    "tweets_GroundTruth.txt": "tweets",
    "movieReviewSnippets_GroundTruth.txt": "movies",
    "amazonReviewSnippets_GroundTruth.txt": "amazon",
    "nytEditorialSnippets_GroundTruth.txt": "nyt",
}
IMAGE_SHIFTS = ["brightness:-0.3", "brightness:0.15", "brightness:0.3", "contrast:0.4", "contrast:0.7", "contrast:1.6",
                "blur:0.7", "blur:1.2", "noise:0.05", "noise:0.1", "noise:0.2", "jpeg:20"]


# ----------------------------------------------------------------------------- text
def domain_of_text():
    """text -> domain, read the way build_text.load_sentences reads the sentences."""
    sdist = os.path.join(build_text.DL, build_text.VADER_SDIST[1])
    if not os.path.exists(sdist):
        os.makedirs(build_text.DL, exist_ok=True)
        build_text.pip_download(build_text.VADER_SDIST[0], build_text.DL, no_binary=True)
    with tarfile.open(sdist) as t:
        inner = t.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    out = {}
    with tarfile.open(fileobj=io.BytesIO(inner)) as t:
        for name in sorted(n for n in t.getnames() if n.endswith("_GroundTruth.txt")):
            dom = DOMAINS[os.path.basename(name)]
            for line in t.extractfile(name).read().decode("utf-8", errors="replace").splitlines():
                parts = line.rstrip("\r").split("\t")
                if len(parts) >= 3:
                    out.setdefault(html.unescape("\t".join(parts[2:])).strip(), dom)  # first file wins, as the dedup
    return out


def edge_embedder():
    """edge.onnx with the L2-normalised embedding (the head's input, before its dynamic
    quantization) as a second output."""
    import onnx

    m = onnx.load(os.path.join(TEXT, "edge.onnx"))
    inits = {i.name: i for i in m.graph.initializer}
    head = next(n for n in m.graph.node if n.op_type in ("MatMul", "MatMulInteger")
                and any(x in inits and list(inits[x].dims) == [384, 2] for x in n.input))
    emb = next(x for x in head.input if x not in inits)
    producer = next((n for n in m.graph.node if emb in n.output), None)
    if producer is not None and producer.op_type == "DynamicQuantizeLinear":  # the INT8 head
        emb = producer.input[0]
    m.graph.output.append(onnx.helper.make_tensor_value_info(emb, onnx.TensorProto.FLOAT, ["batch", 384]))
    path = os.path.join(common.CACHE_DIR, "text-edge-with-embedding.onnx")
    os.makedirs(common.CACHE_DIR, exist_ok=True)
    onnx.save(m, path)
    return common.ort_session(path), emb


def run_batched(session, outputs, tok, texts, batch=32):
    """Length-sorted padded batches (pad id 0 for MiniLM, 1 for MPNet: the masks hide them)."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    res = [None] * len(outputs)
    pad = tok.token_to_id("<pad>") or 0
    for i in range(0, len(texts), batch):
        idx = order[i:i + batch]
        ids, mask = common.pad_batch([tok.encode(texts[j]) for j in idx], pad)
        ys = session.run(outputs, {"input_ids": ids, "attention_mask": mask})
        for k, y in enumerate(ys):
            if res[k] is None:
                res[k] = np.zeros((len(texts),) + y.shape[1:], dtype=np.float32)
            res[k][idx] = y
    return res


def tokenizer(name):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(TEXT, name))
    tok.no_padding()
    tok.enable_truncation(build_text.MAX_TOKENS)
    return tok


def fit_head(X, y, C=4.0, iters=50):
    """L2-regularised logistic regression (sklearn's objective: ||w||^2/2 + C * log-loss, bias
    unpenalised) by Newton's method; deterministic. Returns the 2-class softmax head."""
    Xb = np.hstack([X.astype(np.float64), np.ones((len(X), 1))])
    w = np.zeros(Xb.shape[1])
    reg = np.eye(Xb.shape[1]) / C
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(Xb @ w)))
        g = Xb.T @ (p - y) + reg @ w
        H = (Xb * (p * (1 - p))[:, None]).T @ Xb + reg
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def text_streams(out, per_domain, text_out=None, write_domains=None, files_only=False):
    train, test = build_text.load_sentences()
    dom = domain_of_text()
    rows = [(t, l, "train") for t, l in train] + [(t, l, "test") for t, l in test]
    text_out = text_out or os.path.join(out, "text")
    os.makedirs(text_out, exist_ok=True)
    files = {d: open(os.path.join(text_out, f"{d}.jsonl"), "w") for d in DOMAINS.values()
             if not write_domains or d in write_domains}
    for t, l, split in rows:
        if dom[t] not in files:
            continue
        files[dom[t]].write(json.dumps({"text": t, "label": build_text.LABELS[l], "domain": dom[t], "split": split},
                                       ensure_ascii=False) + "\n")
    for f in files.values():
        f.close()
    if files_only:
        return {d: sum(1 for t, _, _ in rows if dom[t] == d) for d in files}
    texts = [t for t, _, _ in rows]
    y = np.array([l for _, l, _ in rows])
    d = np.array([dom[t] for t in texts])
    is_test = np.array([s == "test" for _, _, s in rows])
    t0 = time.time()
    key = hashlib.sha256((common.sha256_file(os.path.join(TEXT, "edge.onnx")) + json.dumps(texts)).encode()).hexdigest()[:12]
    cache = os.path.join(common.CACHE_DIR, f"loop-edge-{key}.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        pe_shipped, E = z["probs"], z["emb"]
    else:
        s, emb_name = edge_embedder()
        pe_shipped, E = run_batched(s, ["probs", emb_name], tokenizer("edge-tokenizer.json"), texts)
        np.savez(cache, probs=pe_shipped, emb=E)
    print(f"edge: {len(texts)} sentences embedded in {time.time() - t0:.0f}s", flush=True)
    # the stream each domain's figures are on: its test sentences (at most `per_domain`, seeded)
    rng = np.random.default_rng(build_text.SEED + 8)
    stream = np.zeros(len(texts), dtype=bool)
    for dname in DOMAINS.values():
        idx = np.flatnonzero((d == dname) & is_test)
        stream[idx if per_domain <= 0 or len(idx) <= per_domain else rng.choice(idx, per_domain, replace=False)] = True
    t0 = time.time()
    sc = common.ort_session(os.path.join(TEXT, "cloud.onnx"))
    pc = np.zeros((len(texts), 2), dtype=np.float32)
    pc[stream] = run_batched(sc, ["probs"], tokenizer("cloud-tokenizer.json"), [t for t, k in zip(texts, stream) if k])[0]
    print(f"cloud: {int(stream.sum())} test sentences in {time.time() - t0:.0f}s", flush=True)
    thr = json.load(open(os.path.join(TEXT, "manifest.json")))["variants"]["edge"]["threshold"]
    print(f"\ntext domain shift (accuracy on build_text.py's test split, n_stream per domain; edge threshold {thr})")
    print(f"{'domain':8} {'n_all':>6} {'n_stream':>8} {'edge_shipped':>12} {'edge_without':>12} {'cloud':>6} "
          f"{'offload':>7} {'cascade':>7}")
    summary = {}
    for dname in DOMAINS.values():
        src = (d != dname) & ~is_test
        w = fit_head(E[src], y[src])
        z = np.hstack([E, np.ones((len(E), 1))]) @ w
        p_pos = 1.0 / (1.0 + np.exp(-z))
        pe = np.stack([1 - p_pos, p_pos], axis=1)
        sel = (d == dname) & stream
        acc = lambda p: float((p[sel].argmax(1) == y[sel]).mean())  # noqa: E731
        off = pe[sel].max(1) < thr
        casc = float((np.where(off, pc[sel].argmax(1), pe[sel].argmax(1)) == y[sel]).mean())
        summary[dname] = {"n_all": int((d == dname).sum()), "n_stream": int(sel.sum()), "edge_shipped": acc(pe_shipped),
                          "edge_without_domain": acc(pe), "cloud": acc(pc), "offload": float(off.mean()), "cascade": casc}
        r = summary[dname]
        print(f"{dname:8} {r['n_all']:6d} {r['n_stream']:8d} {r['edge_shipped']:12.4f} {r['edge_without_domain']:12.4f} "
              f"{r['cloud']:6.4f} {r['offload']:7.3f} {r['cascade']:7.4f}")
    return summary


# ----------------------------------------------------------------------------- images
def image_shifts(out, hub, n):
    tmp = tempfile.mkdtemp(prefix="tandem-loop-streams-")
    cfg = os.path.join(tmp, "hub.toml")
    with open(cfg, "w") as f:
        f.write(f'feedback_dir = "{tmp}/feedback"\n[eval]\ndir = "{tmp}/eval"\n[mqtt]\nmode = "off"\n'
                f'[models]\ndir = "{common.MODELS_DIR}"\nenabled = ["vision-fashion"]\n')
    res = {}
    for variant in ("edge", "cloud"):
        t0 = time.time()
        cmd = [hub, "eval", "run", "--model", "vision-fashion", "--variant", variant, "--limit", str(n), "--json", "-c", cfg]
        for s in IMAGE_SHIFTS:
            cmd += ["--shift", s]
        r = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rep = json.loads(r.stdout[r.stdout.index("{"):])
        res[variant] = {"none": rep["overall"]["accuracy"], **{s["shift"]: s["metrics"]["accuracy"] for s in rep["shifts"]}}
        print(f"{variant}: {rep['overall']['n']} images x {1 + len(rep['shifts'])} in {time.time() - t0:.0f}s", flush=True)
    print(f"\nFashion-MNIST t10k (first {n}) under the hub's shifts (cloud-hub/src/eval/shift.rs)")
    print(f"{'shift':16} {'edge':>6} {'cloud':>6} {'gap':>6}")
    for s in res["edge"]:
        print(f"{s:16} {res['edge'][s]:6.4f} {res['cloud'][s]:6.4f} {res['cloud'][s] - res['edge'][s]:6.3f}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(common.CACHE_DIR, "loop-streams"))
    ap.add_argument("--hub", default=os.path.join(common.MODELS_DIR, "..", "target", "debug", "tandem-hub"))
    ap.add_argument("--images", type=int, default=2000, help="t10k images per shift")
    ap.add_argument("--per-domain", type=int, default=0, help="test sentences per domain for the figures (0: all)")
    ap.add_argument("--text-out", help="folder of the text/<domain>.jsonl files (default OUT/text)")
    ap.add_argument("--domains", help="comma-separated domains whose file is written (default all)")
    ap.add_argument("--files-only", action="store_true",
                    help="write the text/<domain>.jsonl files, skip the text figures (needs numpy alone)")
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-images", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    summary = {"seed": build_text.SEED}
    if not args.skip_text:
        summary["text"] = text_streams(args.out, args.per_domain, args.text_out,
                                       args.domains.split(",") if args.domains else None, args.files_only)
    if not args.skip_images:
        summary["images"] = image_shifts(args.out, args.hub, args.images)
    common.write_json(os.path.join(args.out, "summary.json"), summary)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
