"""Unlabelled photos for NanoDet's INT8 calibration and for checking an INT8 file against FP32.

The pool: the photos of Debian's `opencv-doc` (examples/data) and `darknet` (data) packages and
of scikit-image's `skimage/data` that are not in `detection-set/` (nor another frame of a photo
there), split into two halves by name: `calibration` (the ranges of build_detection.py's edge
file) and `held_out` (detect_quant.py's fidelity check: the INT8 boxes and class scores against
FP32 on photos neither calibration nor the labelled set has). `make bench-detect` reports on
`detection-set/`, which neither half touches.
"""
import glob
import os
import re

import numpy as np

OCV_DATA = "opencv-doc/usr/share/doc/opencv-doc/examples/data"
DARKNET_DATA = "darknet/usr/share/darknet/data"
# Photos in detection-set and other frames of them (basketball1, chicky_512, licenseplate_motion,
# apple, orange, home; darknet dog, person, horses, eagle, giraffe, kite: out of DARKNET;
# skimage's left motorcycle) and files that are no photos (charts, text, logos, chessboards,
# calibration targets).
SKIP = re.compile(r"^(basketball|chicky|licenseplate|apple|orange|home|dog|person|horses|"
                  r"motorcycle|left|right|chessboard|digits|text|notes|gradient|mask|sudoku|"
                  r"templ|tmpl|ellipses|detect_blob|ml|aloeGT|imageText|pca_test|opencv-logo|"
                  r"LinuxLogo|WindowsLogo)")
SKIMAGE = ("rocket.jpg", "hubble_deep_field.jpg", "coins.png", "brick.png", "grass.png",
           "gravel.png", "color.png")
DARKNET = ("scream.jpg",)


def pool(build_dir: str) -> list:
    """The unlabelled photos, sorted; `build_dir` holds the extracted Debian packages."""
    import skimage

    ocv = os.path.join(build_dir, OCV_DATA)
    files = [f for f in sorted(glob.glob(os.path.join(ocv, "*.jpg")) + glob.glob(os.path.join(ocv, "*.png")))
             if not SKIP.match(os.path.basename(f))]
    files += [os.path.join(build_dir, DARKNET_DATA, n) for n in DARKNET]
    sk = os.path.join(os.path.dirname(skimage.__file__), "data")
    files += [os.path.join(sk, n) for n in SKIMAGE]
    missing = [f for f in files if not os.path.exists(f)]
    assert not missing, f"calibration photos missing: {missing}"
    return files


def split(build_dir: str):
    """(calibration, held_out): alternate halves over the photos' names with a trailing
    number or L/R/A/B removed, so that two frames of one scene (aloeL/aloeR, pic1..pic6) land
    on the same side."""
    files = pool(build_dir)
    key = lambda f: re.sub(r"(_?[0-9]+|[LRAB])?\.(jpg|png)$", "", os.path.basename(f))  # noqa: E731
    groups = sorted({key(f) for f in files})
    side = {g: i % 2 for i, g in enumerate(groups)}
    return [f for f in files if side[key(f)] == 0], [f for f in files if side[key(f)] == 1]


def assert_disjoint(files, labels_json: str) -> None:
    """No calibration photo is one of the labelled set's (by file name after the source prefix)."""
    import json

    doc = json.load(open(labels_json))
    labelled = {os.path.splitext(im["file"].split("/")[-1].split("-", 1)[-1])[0] for im in doc["images"]}
    clash = [f for f in files if os.path.splitext(os.path.basename(f))[0] in labelled]
    assert not clash, f"labelled photos in the calibration pool: {clash}"


def class_score_error(ref_outs, outs, levels=(8, 16, 32)) -> float:
    """Mean |INT8 - FP32| class score over the entries either scores above 0.1."""
    err = []
    for r, q in zip(ref_outs, outs):
        for s in levels:
            a, b = r[f"cls_{s}"], q[f"cls_{s}"]
            m = np.maximum(a, b) > 0.1
            if m.any():
                err.append(np.abs(a - b)[m])
    return float(np.concatenate(err).mean()) if err else 0.0
