"""Drive a Tandem OIP v2 API (the agent's or the hub's) with the real Triton client
(tritonclient[http]).

Usage: triton_client_check.py HOST:PORT REPO_DIR [VARIANT [MODELS]]. VARIANT is the variant the
server runs (`edge`, the default, or `cloud`): the reference outputs and labels are that
variant's. MODELS is the comma-separated list of models the server was started with (default
`vision-fashion,text-sentiment`); the text checks run when it has text-sentiment. Exits non-zero
(assertion) on any mismatch. tritonclient sends tensors with the binary data extension by
default and uses /v2/models/{m}/versions/{v}/... paths when a version is given.
"""
import json
import pathlib
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, repo = sys.argv[1], pathlib.Path(sys.argv[2])
variant = sys.argv[3] if len(sys.argv) > 3 else "edge"
served = sys.argv[4].split(",") if len(sys.argv) > 4 else ["vision-fashion", "text-sentiment"]
models = repo / "models"
c = httpclient.InferenceServerClient(url=url)

assert c.is_server_live(), "live"
assert c.is_server_ready(), "ready"
assert c.is_model_ready("vision-fashion"), "model ready"
assert c.is_model_ready("vision-fashion", "1.0.0"), "model version ready"
assert not c.is_model_ready("vision-fashion", "9.9.9"), "unknown version is not ready"
meta = c.get_model_metadata("vision-fashion", "1.0.0")
assert meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["datatype"] == "FP32", meta

ref = json.loads((models / "vision-fashion/testdata/reference.json").read_text())
cases = [k for k in ref["cases"] if k["variant"] == variant]
assert cases, f"no {variant} reference cases"
for case in cases:
    spec = case["inputs"][0]
    x = np.fromfile(models / "vision-fashion" / spec["file"], dtype="<f4").reshape(spec["shape"])
    want = np.array(case["outputs"][0]["data"], dtype=np.float32).reshape(case["outputs"][0]["shape"])
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # binary_data=True by default
    res = c.infer("vision-fashion", [inp], model_version="1.0.0")
    got = res.as_numpy("logits")
    assert np.abs(got - want).max() <= 1e-4, (case["source"], got, want)
    # JSON output instead of binary
    res = c.infer("vision-fashion", [inp], outputs=[httpclient.InferRequestedOutput("logits", binary_data=False)])
    assert np.abs(res.as_numpy("logits") - want).max() <= 1e-4
    # JSON input
    inp_json = httpclient.InferInput("input", list(x.shape), "FP32")
    inp_json.set_data_from_numpy(x, binary_data=False)
    res = c.infer("vision-fashion", [inp_json])
    assert np.abs(res.as_numpy("logits") - want).max() <= 1e-4

# Classification extension.
res = c.infer("vision-fashion", [inp], outputs=[httpclient.InferRequestedOutput("logits", class_count=3)])
top = res.as_numpy("logits")
assert top.shape == (1, 3), top.shape
first = top[0][0].decode()
assert first.split(":")[1] == str(int(np.argmax(want))), first

# A BYTES input holding the image file itself.
expected = json.loads((models / "vision-fashion/testdata/expected.json").read_text())
for case in [k for k in expected["cases"] if k["variant"] == variant]:
    png = (models / "vision-fashion" / case["input"]).read_bytes()
    b = httpclient.InferInput("image", [1], "BYTES")
    b.set_data_from_numpy(np.array([png], dtype=np.object_))
    res = c.infer("vision-fashion", [b])
    assert int(np.argmax(res.as_numpy("logits")[0])) == case["top1_index"], case

# Text as BYTES.
if "text-sentiment" in served:
    t = httpclient.InferInput("text", [2], "BYTES")
    t.set_data_from_numpy(np.array(["What a wonderful, delightful film".encode(), "Awful. I hated every minute.".encode()], dtype=np.object_))
    res = c.infer("text-sentiment", [t])
    probs = res.as_numpy(c.get_model_metadata("text-sentiment")["outputs"][0]["name"])
    assert probs.shape == (2, 2) and probs[0][1] > 0.5 and probs[1][0] > 0.5, probs

# Errors come back as InferenceServerException with the server's message.
try:
    c.infer("no-such-model", [inp])
    raise AssertionError("unknown model accepted")
except InferenceServerException as e:
    assert "no-such-model" in str(e), e
bad = httpclient.InferInput("input", [1, 1, 27, 28], "FP32")
bad.set_data_from_numpy(np.zeros((1, 1, 27, 28), dtype=np.float32))
try:
    c.infer("vision-fashion", [bad])
    raise AssertionError("wrong shape accepted")
except InferenceServerException as e:
    assert "shape" in str(e), e
print("tritonclient: all checks passed")
