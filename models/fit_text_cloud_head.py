#!/usr/bin/env python3
"""Fit the logistic-regression head of the MPNet text teacher -> text-sentiment/cloud-head.json.

Run once by hand (not by set-up): it embeds the 17,410 VADER training sentences with the
torch-free MPNet graph of build_text_cloud.py (~20 min on 2 cores; the embeddings are cached in
models/.build/) and fits the same head as build_text.py: scikit-learn
`LogisticRegression(C=4, max_iter=2000, random_state=SEED)` on the L2-normalised embeddings,
written as a 2-class softmax head (logits `[-z/2, z/2]`). The split and seed are build_text.py's.
It also embeds the 2,000 test sentences and prints the head's accuracy on them.

Needs numpy, onnx, onnxruntime 1.31.1, tokenizers and scikit-learn (versions in
requirements-lock.txt); the models venv has them all.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_text  # noqa: E402  (the sentences, the split and SEED)
import build_text_cloud  # noqa: E402
import common  # noqa: E402

ENCODER = os.path.join(common.CACHE_DIR, "text-cloud-embeddings.onnx")


def tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(build_text.OUT, "cloud-tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(build_text.MAX_TOKENS)
    return tok


def _embed_batches(s, tok, texts, idx_batches, out):
    for idx in idx_batches:
        ids, mask = common.pad_batch([tok.encode(texts[j]) for j in idx], build_text_cloud.PAD_ID)
        out[idx] = s.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]


def embed(texts, batch=64, chunk=1024, workers=1, worker=None, reverse=False):
    """L2-normalised MPNet embeddings [N, 768], length-sorted padded batches, cached by content.

    The work is cut into chunks of `chunk` length-sorted texts, each cached on its own, so that
    `--workers N` processes can share it (worker k embeds chunks k, k+N, ...) and an interrupted
    run resumes."""
    import hashlib

    key = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:12]
    cache = os.path.join(common.CACHE_DIR, f"text-cloud-onnx-emb-{key}.npy")
    if os.path.exists(cache):
        return np.load(cache)
    if not os.path.exists(ENCODER):
        subprocess.run([sys.executable, build_text_cloud.__file__, "--embeddings-only", "--out", ENCODER], check=True)
    order = np.argsort([len(t) for t in texts], kind="stable")
    chunks = [order[i:i + chunk] for i in range(0, len(texts), chunk)]
    part = lambda c: os.path.join(common.CACHE_DIR, f"text-cloud-onnx-emb-{key}-part{c:03d}.npy")  # noqa: E731
    mine = range(len(chunks)) if worker is None else range(worker, len(chunks), workers)
    if reverse:  # a helper from the other end: the longest chunks first, each claimed by a lock file
        mine = range(len(chunks) - 1, -1, -1)
    todo = [c for c in mine if not os.path.exists(part(c))]
    if todo:
        s = common.ort_session(ENCODER, threads=int(os.environ.get("TANDEM_FIT_THREADS", "2")))
        tok = tokenizer()
        t0 = time.time()
        for c in todo:
            if reverse:
                if os.path.exists(part(c)):
                    continue
                try:
                    os.close(os.open(part(c) + ".lock", os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    continue
            out = np.zeros((len(texts), build_text_cloud.HIDDEN), dtype=np.float32)
            idx = chunks[c]
            _embed_batches(s, tok, texts, [idx[i:i + batch] for i in range(0, len(idx), batch)], out)
            np.save(part(c) + ".tmp.npy", out[idx])
            os.replace(part(c) + ".tmp.npy", part(c))
            print(f"  chunk {c + 1}/{len(chunks)} ({len(idx)} texts) at {time.time() - t0:.0f}s", flush=True)
    if worker is not None:
        return None
    out = np.zeros((len(texts), build_text_cloud.HIDDEN), dtype=np.float32)
    for c, idx in enumerate(chunks):
        out[idx] = np.load(part(c))
    np.save(cache, out)
    for c in range(len(chunks)):
        os.remove(part(c))
    return out


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=1, help="embedding processes sharing the work")
    ap.add_argument("--worker", type=int, help="embed this worker's chunks only, then exit")
    ap.add_argument("--reverse", action="store_true", help="with --worker: take any chunk, longest first")
    ap.add_argument("--no-test", action="store_true",
                    help="do not embed the test sentences: keep the manifest's accuracy and cascade figures")
    args = ap.parse_args()
    os.makedirs(common.CACHE_DIR, exist_ok=True)
    train, test = build_text.load_sentences()
    if args.worker is not None:
        for texts in ([t for t, _ in train], [t for t, _ in test]):
            embed(texts, workers=args.workers, worker=args.worker, reverse=args.reverse)
        return
    from sklearn.linear_model import LogisticRegression

    Xtr = embed([t for t, _ in train])
    ytr = np.array([label for _, label in train])
    clf = LogisticRegression(C=4.0, max_iter=2000, random_state=build_text.SEED).fit(Xtr, ytr)
    w = np.stack([-clf.coef_[0] / 2, clf.coef_[0] / 2]).astype(np.float32)
    b = np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2], dtype=np.float32)
    probs, acc = None, None
    if not args.no_test:
        Xte = embed([t for t, _ in test])
        probs = common.softmax(Xte @ w.T + b)
        acc = round(float((probs.argmax(1) == np.array([label for _, label in test])).mean()), 4)
        np.save(os.path.join(common.CACHE_DIR, "text-cloud-testprobs.npy"), probs.astype(np.float32))
    print(f"head fitted on {len(train)} sentences; accuracy on the {len(test)} test sentences {acc}")
    common.write_json(build_text_cloud.HEAD, {
        "description": "Logistic-regression head of the MPNet text teacher (2-class softmax form), fitted by "
                       "models/fit_text_cloud_head.py on the L2-normalised all-mpnet-base-v2 embeddings of the "
                       "VADER training split; read by models/build_text_cloud.py",
        "seed": build_text.SEED, "train_sentences": len(train), "C": 4.0,
        "weight": [[float(v) for v in row] for row in w], "bias": [float(v) for v in b]})
    finish(test, probs)


def run1(path, tok_file, texts):
    """probs [N, 2] of an ONNX file, batch of 1, no padding (the deployed pipeline)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(build_text.OUT, tok_file))
    tok.no_padding()
    tok.enable_truncation(build_text.MAX_TOKENS)
    s = common.ort_session(path)
    return np.concatenate([s.run(["probs"], dict(zip(["input_ids", "attention_mask"], build_text.encode1(tok, t))))[0]
                           for t in texts])


def finish(test, pc):
    """Build cloud.onnx with the new head; rewrite its expected cases, accuracy, cascade, sha256s.

    `pc`: the cloud probabilities of the test sentences (this graph's embeddings, padded batches,
    and the head: the ONNX file's outputs to ~1e-6)."""
    out = build_text.OUT
    cloud = os.path.join(out, "cloud.onnx")
    subprocess.run([sys.executable, build_text_cloud.__file__, "--out", cloud, "--no-check"], check=True)
    y = np.array([label for _, label in test])
    texts = [t for t, _ in test]
    # the reference cases: the torch-exported model's outputs, kept; how far this graph is from them
    ref = json.load(open(os.path.join(out, "testdata", "reference.json")))
    worst = 0.0
    s = common.ort_session(cloud)
    for c in ref["cases"]:
        if c["variant"] != "cloud":
            continue
        feeds = {i["name"]: np.fromfile(os.path.join(out, i["file"]), dtype="<i8").reshape(i["shape"]) for i in c["inputs"]}
        got = s.run(["probs"], feeds)[0].ravel()
        d = float(np.abs(got - np.array(c["outputs"][0]["data"])).max())
        worst = max(worst, d)
        print(f"reference case {c['line']}: {got.tolist()} torch {c['outputs'][0]['data']} |diff| {d:.2e}")
    print(f"reference cases: max |diff| {worst:.2e} (REF_ATOL {build_text_cloud.REF_ATOL})")
    for c in ref["cases"]:
        if c["variant"] == "cloud":
            c["optional"] = False
            c["exported_by"] = "torch.onnx.export (build_text.py --cloud); build_text_cloud.py must match within REF_ATOL"
    common.write_json(os.path.join(out, "testdata", "reference.json"), ref)
    exp_path = os.path.join(out, "testdata", "expected.json")
    exp = json.load(open(exp_path))
    for c in exp["cases"]:
        if c["variant"] == "cloud":
            p = run1(cloud, "cloud-tokenizer.json", [c["text"]])[0]
            i = int(p.argmax())
            c.update(top1=build_text.LABELS[i], top1_index=i, score=float(p[i]), optional=False)
    common.write_json(exp_path, exp)
    mpath = os.path.join(out, "manifest.json")
    m = json.load(open(mpath))
    v = m["variants"]["cloud"]
    v["optional"] = False
    m["description"] = ("Binary sentiment from sentence embeddings: all-MiniLM-L6-v2 INT8 (edge), all-mpnet-base-v2 "
                        "FP32 (cloud, built by make setup: scripts/setup-text-cloud.sh)")
    if pc is not None:
        v["accuracy"]["top1"] = round(float((pc.argmax(1) == y).mean()), 4)
        pe = run1(os.path.join(out, "edge.onnx"), "edge-tokenizer.json", texts)
        sweep = common.cascade_sweep(pe, pc, y)
        c = next(x for x in sweep if x["threshold"] == build_text.THRESHOLD)
        m["cascade"].update(offloaded=c["offloaded"], top1=c["top1"], sweep=sweep)
    m["files"] = common.files_sha256(out)
    common.write_json(mpath, m)
    print("manifest:", m["files"]["cloud.onnx"])


if __name__ == "__main__":
    main()
