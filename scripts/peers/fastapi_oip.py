"""FastAPI + Python onnxruntime peer for `tandem-bench local` (see ../shared/notes/peers.md).

Serves the same model as the agent, with the same request encodings:
  POST /v2/models/{m}/infer   OIP v2 JSON, or the binary tensor extension
                              (Inference-Header-Content-Length) -> OIP v2 JSON outputs
  POST /v1/classify/{m}       raw image bytes (PIL decode, resize, normalise per manifest)
                              or UTF-8 text (tokenizers, no fixed padding) -> label, score
  GET  /v2/health/ready
Environment: PEER_MODEL_DIR (models/<name>), PEER_VARIANT (edge), PEER_THREADS (1).
"""
import io
import json
import os
import pathlib

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request, Response

model_dir = pathlib.Path(os.environ["PEER_MODEL_DIR"])
variant = os.environ.get("PEER_VARIANT", "edge")
threads = int(os.environ.get("PEER_THREADS", "1"))
manifest = json.loads((model_dir / "manifest.json").read_text())
spec = manifest["variants"][variant]
labels = (model_dir / manifest["labels"]).read_text().splitlines()
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
session = ort.InferenceSession(str(model_dir / spec["file"]), so, providers=["CPUExecutionProvider"])
pre = spec["preprocess"]
DTYPES = {"FP32": np.float32, "INT64": np.int64}
tokenizer = None
if pre["type"] == "text":
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / pre["tokenizer"]))
    tokenizer.no_padding()
    tokenizer.enable_truncation(pre["max_tokens"])

app = FastAPI()


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


def outputs_json(outs):
    return [
        {"name": o.name, "datatype": "FP32", "shape": list(v.shape), "data": v.ravel().tolist()}
        for o, v in zip(session.get_outputs(), outs)
    ]


@app.post("/v2/models/{m}/infer")
async def infer(m: str, request: Request):
    body = await request.body()
    hlen = request.headers.get("inference-header-content-length")
    n = int(hlen) if hlen is not None else len(body)
    req = json.loads(body[:n])
    feeds, off = {}, n
    for i in req["inputs"]:
        dt = DTYPES[i["datatype"]]
        size = (i.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arr = np.frombuffer(body[off:off + size], dtype=dt)
            off += size
        else:
            arr = np.asarray(i["data"], dtype=dt)
        feeds[i["name"]] = arr.reshape(i["shape"])
    outs = session.run(None, feeds)
    return {"model_name": m, "model_version": manifest["version"], "outputs": outputs_json(outs)}


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@app.post("/v1/classify/{m}")
async def classify(m: str, request: Request):
    body = await request.body()
    if tokenizer is not None:
        enc = tokenizer.encode(body.decode("utf-8"))
        feeds = {
            pre["input_ids"]: np.asarray([enc.ids], dtype=np.int64),
            pre["attention_mask"]: np.asarray([enc.attention_mask], dtype=np.int64),
        }
    else:
        from PIL import Image

        img = Image.open(io.BytesIO(body)).convert("L" if pre["color"] == "gray" else "RGB")
        img = img.resize((pre["width"], pre["height"]), Image.BILINEAR)
        x = (np.asarray(img, dtype=np.float32) * pre["scale"] - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
        x = x[None, None] if x.ndim == 2 else x.transpose(2, 0, 1)[None]
        feeds = {spec["inputs"][0]["name"]: np.ascontiguousarray(x, dtype=np.float32)}
    out = session.run(None, feeds)[0][0]
    p = out if spec["outputs"][0]["kind"] == "probabilities" else softmax(out)
    k = int(p.argmax())
    return {"label": labels[k], "score": float(p[k])}
