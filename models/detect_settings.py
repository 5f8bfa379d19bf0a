"""Edge settings for detect-coco, measured on the labelled set (docs/benchmarks/detect.md).

Runs NanoDet-g INT8 (edge.onnx) and FP32 (cloud.onnx) at several input sizes and on the
horizontally flipped photos through the numpy reference pipeline (detection_ref.py: the same
steps as the engine, PIL resize), and prints mAP@0.5 (all-point AP per labelled class, as
bench/src/detect_eval.rs) at several answer thresholds. The flipped rows measure the set's
noise: a flip changes no model, only which boxes land over 0.5 IoU.

    .venv/bin/python models/detect_settings.py            # the table of the doc
    .venv/bin/python models/detect_settings.py edge:384    # one setting
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
import detection_ref as R  # noqa: E402

HERE = Path(__file__).parent
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.35)
DEFAULT = ["edge:320", "edge:384", "edge:416", "edge:448", "edge:512", "cloud:608",
           "edge:416:flip", "cloud:608:flip"]


def iou(a, b):
    return float(R.iou(np.asarray(a, np.float64), np.asarray([b], np.float64))[0])


def evaluate(truth, preds):
    """mAP@0.5 over the labelled classes; truth [(label, box)], preds [(label, box, score)]."""
    aps = []
    for c in sorted({t[0] for ts in truth for t in ts}):
        dets = sorted(((p[2], i, p[1]) for i, ps in enumerate(preds) for p in ps if p[0] == c),
                      key=lambda d: -d[0])
        gts = [[t[1] for t in ts if t[0] == c] for ts in truth]
        n_gt = sum(map(len, gts))
        used = [[False] * len(g) for g in gts]
        tp = fp = 0
        curve = []
        for _, i, b in dets:
            best = max(((j, iou(b, g)) for j, g in enumerate(gts[i])), key=lambda x: x[1],
                       default=None)
            if best and best[1] >= 0.5 and not used[i][best[0]]:
                used[i][best[0]] = True
                tp += 1
            else:
                fp += 1
            curve.append((tp / max(n_gt, 1), tp / (tp + fp)))
        ap, prev = 0.0, 0.0
        for k, (r, _) in enumerate(curve):
            ap += (r - prev) * max(p for _, p in curve[k:])
            prev = r
        aps.append(ap)
    return sum(aps) / max(len(aps), 1)


def run(setting, images, man, labels):
    variant, size, *rest = setting.split(":")
    flip = rest == ["flip"]
    v = man["variants"][variant]
    p = dict(v["preprocess"], width=int(size), height=int(size))
    d = dict(v["detection"]["decode"], score_threshold=min(THRESHOLDS),
             iou_threshold=v["detection"]["iou_threshold"],
             max_detections=v["detection"]["max_detections"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(HERE / "detect-coco" / v["file"]), so)
    names = [o.name for o in sess.get_outputs()]
    out = []
    for im in images:
        rgb = R.load_rgb(str(HERE / "detection-set" / im["file"]))
        if flip:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        x, geo = R.preprocess(rgb, p)
        dets = R.detect(dict(zip(names, sess.run(None, {"input": x}))), d, geo, int(size),
                        int(size))
        w = rgb.shape[1]
        out.append([(labels[c], [w - b[2], b[1], w - b[0], b[3]] if flip else b, s)
                    for b, s, c in dets])
    return out


def load_set():
    """detect-coco's manifest and labels, the labelled photos with objects and their truth
    [(label, box)] per photo."""
    man = json.loads((HERE / "detect-coco" / "manifest.json").read_text())
    labels = (HERE / "detect-coco" / "labels.txt").read_text().split("\n")
    doc = json.loads((HERE / "detection-set" / "labels.json").read_text())
    images = [im for im in doc["images"] if im.get("objects") is not None]
    truth = [[(o["label"], o["box"]) for o in im["objects"]] for im in images]
    return man, labels, images, truth


def main():
    man, labels, images, truth = load_set()
    print(f"detect-coco: {len(images)} photos, {sum(map(len, truth))} boxes; mAP@0.5 when "
          "answering boxes >= threshold")
    print(f"{'setting':<16}" + "".join(f"{t:>8.2f}" for t in THRESHOLDS))
    for setting in sys.argv[1:] or DEFAULT:
        boxes = run(setting, images, man, labels)
        row = [evaluate(truth, [[b for b in bs if b[2] >= t] for bs in boxes])
               for t in THRESHOLDS]
        print(f"{setting:<16}" + "".join(f"{m:>8.3f}" for m in row), flush=True)


if __name__ == "__main__":
    main()
