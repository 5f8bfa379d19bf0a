#!/usr/bin/env python3
"""Check every models/*/manifest.json: sha256 of each listed file, each ONNX loads in onnxruntime
1.31.1 with IR <= 10 and opset 13-17 (17 for the classifiers, 13 for the detectors as tf2onnx
converts them), declared inputs/outputs match the graph, and the reference
cases in testdata/reference.json reproduce. Optional variants whose file is absent are skipped."""
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    import onnx

    failures = 0
    for mpath in sorted(glob.glob(os.path.join(common.MODELS_DIR, "*", "manifest.json"))):
        d = os.path.dirname(mpath)
        m = json.load(open(mpath))
        name = m["name"]
        optional_files = {v["file"] for v in m["variants"].values() if v.get("optional")}
        for rel, sha in m["files"].items():
            p = os.path.join(d, rel)
            if not os.path.exists(p):
                if rel in optional_files:
                    print(f"[{name}] {rel}: optional, absent (skipped)")
                    continue
                print(f"[{name}] MISSING {rel}")
                failures += 1
            elif common.sha256_file(p) != sha:
                print(f"[{name}] SHA256 MISMATCH {rel}")
                failures += 1
        present = {}
        for vname, v in m["variants"].items():
            p = os.path.join(d, v["file"])
            if not os.path.exists(p):
                continue
            mo = onnx.load(p, load_external_data=False)
            opset = {o.domain: o.version for o in mo.opset_import}.get("", None)
            if mo.ir_version > common.MAX_IR_VERSION or opset is None or not 13 <= opset <= 17:
                print(f"[{name}/{vname}] ir_version {mo.ir_version} opset {opset}")
                failures += 1
            ins, outs = common.onnx_io(p)
            want_in = [{k: i[k] for k in ("name", "dtype", "shape")} for i in v["inputs"]]
            want_out = [{k: o[k] for k in ("name", "dtype", "shape")} for o in v["outputs"]]
            if ins != want_in or outs != want_out:
                print(f"[{name}/{vname}] io mismatch: graph {ins} {outs} manifest {want_in} {want_out}")
                failures += 1
            present[vname] = common.ort_session(p)
        ref = json.load(open(os.path.join(d, "testdata", "reference.json")))
        n = 0
        for c in ref["cases"]:
            s = present.get(c["variant"])
            if s is None:
                continue
            feeds = {}
            for i in c["inputs"]:
                dt = {"float32": "<f4", "int64": "<i8"}[i["dtype"]]
                feeds[i["name"]] = np.fromfile(os.path.join(d, i["file"]), dtype=dt).reshape(i["shape"])
            for o in c["outputs"]:
                y = s.run([o["name"]], feeds)[0]
                if list(y.shape) != o["shape"] or not np.allclose(y.ravel(), o["data"], atol=1e-4, rtol=1e-4):
                    print(f"[{name}/{c['variant']}] reference mismatch for {c.get('source')}")
                    failures += 1
            n += 1
        print(f"[{name}] variants loaded: {sorted(present)}; {n} reference cases checked")
    if failures:
        print(f"{failures} problem(s)")
        sys.exit(1)
    print("all model folders OK")


if __name__ == "__main__":
    main()
