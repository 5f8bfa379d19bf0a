"""Reference detection pipeline in numpy: pre-processing, NanoDet and CenterFace decoding, NMS.

The Rust engine (engine/src/detect/) implements the same steps; build_detection.py writes what
this module computes as the engine's test data (testdata/reference.json, expected.json), so the
two are compared on the same files. Keep the steps in the same order as the Rust code.
"""
import math

import numpy as np
from PIL import Image


def load_rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def preprocess(rgb: np.ndarray, p: dict):
    """HWC uint8 RGB -> (NCHW float32 tensor, geometry) per a manifest `preprocess` block.

    Geometry maps model-input pixels back to image pixels: x_img = (x_in - ox) / sx.
    """
    h, w = rgb.shape[:2]
    tw, th = p["width"], p["height"]
    img = Image.fromarray(rgb)
    if p["resize"] == "stretch":
        sx, sy, ox_, oy_ = tw / w, th / h, 0, 0
        out = np.asarray(img.resize((tw, th), Image.BILINEAR))
    elif p["resize"] == "letterbox":
        # centred, border = pad_value (engine/src/preprocess/geometry.rs)
        s = min(tw / w, th / h)
        nw = min(max(1, math.floor(w * s + 0.5)), tw)
        nh = min(max(1, math.floor(h * s + 0.5)), th)
        ox, oy = (tw - nw) // 2, (th - nh) // 2
        canvas = np.full((th, tw, 3), p.get("pad_value", 0), np.uint8)
        canvas[oy:oy + nh, ox:ox + nw] = np.asarray(img.resize((nw, nh), Image.BILINEAR))
        out = canvas
        sx, sy, ox_, oy_ = nw / w, nh / h, ox, oy
    else:
        raise ValueError(p["resize"])
    x = out.astype(np.float32)
    if p["color"] == "bgr":
        x = x[..., ::-1]
    mean = np.array(p["mean"], np.float32)
    std = np.array(p["std"], np.float32)
    x = (x * np.float32(p["scale"]) - mean) / std
    if p["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], np.float32), {"sx": sx, "sy": sy, "ox": ox_, "oy": oy_,
                                                       "w": w, "h": h}


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a [4] with boxes b [N,4] (x1,y1,x2,y2)."""
    x1 = np.maximum(a[0], b[:, 0])
    y1 = np.maximum(a[1], b[:, 1])
    x2 = np.minimum(a[2], b[:, 2])
    y2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[..., 2] - z[..., 0], 0, None) * np.clip(z[..., 3] - z[..., 1], 0, None)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes, scores, classes, iou_thr, max_det):
    """Per-class greedy NMS; ties broken by lower index. Returns kept indices, best first."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if len(keep) >= max_det:
            break
        ok = True
        for k in keep:
            if classes[k] == classes[i] and iou(boxes[k], boxes[i:i + 1])[0] > iou_thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def decode_nanodet(outs: dict, d: dict, in_w: int, in_h: int):
    """GFL head: per stride, class scores [1,N,C] (already sigmoid) and distances [1,N,4*(R+1)]
    as a softmax over R+1 bins per side (l,t,r,b), in stride units, centre (x+0.5, y+0.5)*s.
    A level with `input_size` [w, h] came from a branch that saw the input resized to w x h:
    its grid is w / s and its boxes are scaled by in_w / w, in_h / h. A `mirrored` level's
    branch saw its input mirrored left-right: x -> w - x before the scaling."""
    boxes, scores, classes = [], [], []
    bins = d["reg_max"] + 1
    proj = np.arange(bins, dtype=np.float32)
    for lvl in d["levels"]:
        s = lvl["stride"]
        cls = outs[lvl["scores"]][0]
        reg = outs[lvl["boxes"]][0]
        bw, bh = lvl.get("input_size", (in_w, in_h))
        kx, ky = in_w / bw, in_h / bh
        fw = (bw + s - 1) // s
        best = cls.argmax(1)
        bs = cls[np.arange(len(cls)), best]
        for i in np.nonzero(bs > d["score_threshold"])[0]:
            cx = (i % fw + d["center_offset"]) * s
            cy = (i // fw + d["center_offset"]) * s
            r = reg[i].reshape(4, bins).astype(np.float64)
            r = np.exp(r - r.max(1, keepdims=True))
            r = r / r.sum(1, keepdims=True)
            dist = (r * proj).sum(1) * s
            x1, x2 = cx - dist[0], cx + dist[2]
            if lvl.get("mirrored"):
                x1, x2 = bw - x2, bw - x1
            boxes.append([x1 * kx, (cy - dist[1]) * ky, x2 * kx, (cy + dist[3]) * ky])
            scores.append(float(bs[i]))
            classes.append(int(best[i]))
    return boxes, scores, classes


def decode_centerface(outs: dict, d: dict, in_w: int, in_h: int):
    """CenterFace: heatmap [1,1,H/4,W/4] (sigmoid), log sizes [1,2,..] (h, w), offsets
    [1,2,..] (y, x); box = ((x + ox + 0.5) * 4 - w/2, ...), w = exp(s1) * 4."""
    heat = outs[d["heatmap"]][0, 0]
    scale = outs[d["scale"]][0]
    off = outs[d["offset"]][0]
    s = d["stride"]
    boxes, scores, classes = [], [], []
    ys, xs = np.nonzero(heat > d["score_threshold"])
    for y, x in zip(ys, xs):
        bh = np.exp(scale[0, y, x]) * s
        bw = np.exp(scale[1, y, x]) * s
        oy, ox = off[0, y, x], off[1, y, x]
        cx = (x + ox + 0.5) * s
        cy = (y + oy + 0.5) * s
        x1 = max(0.0, cx - bw / 2)
        y1 = max(0.0, cy - bh / 2)
        boxes.append([x1, y1, min(x1 + bw, in_w), min(y1 + bh, in_h)])
        scores.append(float(heat[y, x]))
        classes.append(0)
    return boxes, scores, classes


def detect(outs: dict, d: dict, geo: dict, in_w: int, in_h: int):
    """Decode, NMS, map back to image pixels (clipped). Returns [(x1,y1,x2,y2), score, class]."""
    dec = {"nanodet": decode_nanodet, "centerface": decode_centerface}[d["type"]]
    boxes, scores, classes = dec(outs, d, in_w, in_h)
    if not boxes:
        return []
    b = np.array(boxes, np.float64)
    keep = nms(b, scores, classes, d["iou_threshold"], d["max_detections"])
    out = []
    for k in keep:
        x1, y1, x2, y2 = b[k]
        x1, x2 = [min(max((v - geo.get("ox", 0)) / geo["sx"], 0.0), geo["w"]) for v in (x1, x2)]
        y1, y2 = [min(max((v - geo.get("oy", 0)) / geo["sy"], 0.0), geo["h"]) for v in (y1, y2)]
        out.append(([x1, y1, x2, y2], scores[k], classes[k]))
    return out
