"""Which NanoDet layers stay float in detect-coco's INT8 edge file, judged off the labelled set.

Quantises the FP32 net (detect-coco/cloud.onnx's first branch) with build_detection.py's recipe, keeping
different node sets in float, and prints for each file its fidelity to FP32 on the held-out
half of detect_calib.py's unlabelled photos (whole + two seeded crops each; neither the
calibration half nor detection-set): the mean class-score error (|INT8 - FP32| where either
is above 0.1) and mAP@0.5 of its boxes (>= 0.2) against FP32's boxes >= 0.35 as truth; and
its single-thread CPU time per 416x416 frame (ORT, the calling thread's CPU time: steadier than
wall time on a shared machine). detection-set, which `make bench-detect` reports on, is never
read. Run in the models venv after build_detection.py has fetched its sources:

    python models/detect_quant.py                # the recipes of models/README.md
    python models/detect_quant.py --sensitivity  # plus each conv (+ its activation) in float
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_detection as B  # noqa: E402
import detect_calib  # noqa: E402
import detection_ref as ref  # noqa: E402
from detect_settings import evaluate  # noqa: E402

FOLDER = os.path.join(B.common.MODELS_DIR, "detect-coco")
OUT = os.path.join(B.BUILD, "quant")
FP32 = os.path.join(OUT, "nanodet-fp32.onnx")  # cloud.onnx's first branch: the plain net
PRE = {**B.NANODET_PRE, "width": B.QUANT_SIZE, "height": B.QUANT_SIZE}
DEC = {**B.NANODET_DECODE, "score_threshold": 0.2, "iou_threshold": 0.5, "max_detections": 100}


def outputs(path, xs):
    sess = B.common.ort_session(path)
    return [B.run(sess, x) for x in xs]


def boxes_map(truth, preds):
    """mAP@0.5 (detect_settings.evaluate) of `preds` against `truth`, both [(box, score,
    class)] per frame."""
    as_truth = [[(c, b) for b, _, c in ts] for ts in truth]
    return evaluate(as_truth, [[(c, b, s) for b, s, c in ps] for ps in preds])


def cpu_ms(path, x, n=15):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {"input": x})
    t = []
    for _ in range(n):
        t0 = time.thread_time()
        sess.run(None, {"input": x})
        t.append(time.thread_time() - t0)
    return float(np.median(t) * 1000)


def main():
    B.fetch(models=False)
    os.makedirs(OUT, exist_ok=True)
    B.detect_cloud.single_scale(os.path.join(FOLDER, "cloud.onnx"), FP32)
    calib, held = detect_calib.split(B.BUILD)
    xs = [ref.preprocess(np.asarray(img), PRE)[0]
          for img in B.common.calibration_views(held, B.SEED + 1, 2)]
    unit = {"sx": 1.0, "sy": 1.0, "w": PRE["width"], "h": PRE["height"]}
    ref_outs = outputs(FP32, xs)
    ref_dets = [ref.detect(o, DEC, unit, PRE["width"], PRE["height"]) for o in ref_outs]
    truth = [[d for d in ds if d[1] >= 0.35] for ds in ref_dets]
    head, stem = B.head_nodes(FP32), B.stem_nodes(FP32)
    recipes = {"int8, head tail float": head, "int8, head tail + stem float (edge.onnx)": head + stem}
    if "--sensitivity" in sys.argv:
        import onnx

        g = onnx.load(FP32).graph
        after = {i: n for n in g.node for i in n.input}
        for n in g.node:
            if n.op_type == "Conv" and n.name not in head:
                act = after.get(n.output[0])
                extra = [act.name] if act is not None and act.op_type == "LeakyRelu" else []
                recipes[f"int8, head tail + {n.name} float"] = head + [n.name] + extra
    files = {"fp32 (cloud.onnx)": FP32}
    cache = os.path.join(OUT, "ranges.json")
    for i, (name, exclude) in enumerate(recipes.items()):
        files[name] = os.path.join(OUT, f"recipe{i}.onnx")
        B.quantize(FP32, files[name], PRE, exclude=exclude, files=calib, cache=cache)
    print(f"held-out: {len(held)} unlabelled photos, {len(xs)} frames; FP32 boxes >= 0.35: "
          f"{sum(map(len, truth))}")
    print(f"{'file':<48} {'cls err':>8} {'mAP50 vs FP32':>14} {'cpu ms':>7}")
    for name, path in files.items():
        outs = outputs(path, xs)
        dets = [ref.detect(o, DEC, unit, PRE["width"], PRE["height"]) for o in outs]
        print(f"{name:<48} {detect_calib.class_score_error(ref_outs, outs):>8.4f} "
              f"{boxes_map(truth, dets):>14.3f} {cpu_ms(path, xs[0]):>7.1f}", flush=True)


if __name__ == "__main__":
    main()
