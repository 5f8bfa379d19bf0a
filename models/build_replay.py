#!/usr/bin/env python3
"""Replay sets: a seeded sample of each trainable model's ORIGINAL TRAINING data, shipped beside
its test set so that the hub's retraining (cloud-hub/src/train/replay.rs, `train.replay_share`)
can mix it into a fit and keep what the head knew. Never drawn from a test set.

vision-fashion: N images of the Fashion-MNIST train split (Debian `dataset-fashion-mnist`, the
                60k images build_fashion.py trained on), N/10 per class, as IDX (gzip):
                data/replay-images-idx3-ubyte.gz, data/replay-labels-idx1-ubyte.gz.
text-sentiment: N sentences of build_text.py's `train` split (the VADER sentences the shipped
                head was fitted on; same filter, de-duplication and seeded split), half of each
                label, as data/sentences-replay.jsonl (`{"text", "label"}`).

Both in a seeded random order (a prefix of either file is a balanced sample). Needs numpy only.
Usage: build_replay.py [--n 2000]
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_text  # noqa: E402  (the VADER split)
import common  # noqa: E402

SEED = 20261205
FASHION_SRC = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = int.from_bytes(data[0:4], "big") & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path, arr, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    # mtime=0: the same input gives the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def balanced(labels, n, classes, rng):
    """n indices, n/classes of each class, in a random order."""
    per = n // classes
    picked = np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in range(classes)])
    return picked[rng.permutation(len(picked))]


def fashion(n):
    x = read_idx(f"{FASHION_SRC}/train-images-idx3-ubyte.gz")
    y = read_idx(f"{FASHION_SRC}/train-labels-idx1-ubyte.gz")
    idx = balanced(y, n, 10, np.random.default_rng(SEED))
    out = os.path.join(common.MODELS_DIR, "vision-fashion", "data")
    write_idx(os.path.join(out, "replay-images-idx3-ubyte.gz"), x[idx], 2051)
    write_idx(os.path.join(out, "replay-labels-idx1-ubyte.gz"), y[idx], 2049)
    print(f"vision-fashion: {len(idx)} of {len(y)} training images")


def text(n):
    train, test = build_text.load_sentences()
    assert not {t for t, _ in train} & {t for t, _ in test}, "train and test share a sentence"
    labels = np.array([l for _, l in train])
    idx = balanced(labels, n, 2, np.random.default_rng(SEED))
    path = os.path.join(build_text.OUT, "data", "sentences-replay.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in idx:
            t, l = train[i]
            f.write(json.dumps({"text": t, "label": build_text.LABELS[l]}, ensure_ascii=False) + "\n")
    print(f"text-sentiment: {len(idx)} of {len(train)} training sentences")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    fashion(args.n)
    text(args.n)
