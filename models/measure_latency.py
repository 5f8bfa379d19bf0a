#!/usr/bin/env python3
"""Median single-input latency of every present variant with onnxruntime 1.31.1 (CPU, 2 intra-op
threads), on the reference inputs in testdata/. Informational only (not part of the build)."""
import glob
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(reps=50):
    for mpath in sorted(glob.glob(os.path.join(common.MODELS_DIR, "*", "manifest.json"))):
        d = os.path.dirname(mpath)
        m = json.load(open(mpath))
        ref = json.load(open(os.path.join(d, "testdata", "reference.json")))
        for vname, v in m["variants"].items():
            p = os.path.join(d, v["file"])
            if not os.path.exists(p):
                continue
            case = next(c for c in ref["cases"] if c["variant"] == vname)
            feeds = {i["name"]: np.fromfile(os.path.join(d, i["file"]),
                                            dtype={"float32": "<f4", "int64": "<i8"}[i["dtype"]]).reshape(i["shape"])
                     for i in case["inputs"]}
            s = common.ort_session(p, threads=2)
            for _ in range(5):
                s.run(None, feeds)
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                s.run(None, feeds)
                ts.append(time.perf_counter() - t0)
            shape = {k: list(a.shape) for k, a in feeds.items()}
            print(f"{m['name']}/{vname}: median {np.median(ts) * 1000:.2f} ms  ({os.path.getsize(p) / 1e6:.2f} MB, input {shape})")


if __name__ == "__main__":
    main()
