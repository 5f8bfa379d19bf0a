"""Convert a TF.js graph model (model.json + weight shards) to ONNX with tf2onnx.

Runs in its own venv (models/setup-tf-venv.sh: tensorflow-cpu 2.15.1, tf2onnx 1.17.0,
onnx 1.16.2; onnx >= 1.17 breaks TF 2.15), not the main models venv.

The TF.js converter drops attributes that have defaults in TensorFlow's op registry (and
`TArgs` on fused ops); tf2onnx needs them, so every node gets its missing attributes back from
the op definitions before the graph is imported. Weights stored as float16 ("quantization" in
the weights manifest) are widened to float32; int64 constants stored as int32 are widened back.

    python convert_tfjs.py MODEL_JSON OUT_ONNX --input input_1:0=input \
        --output Identity:0=cls_8 ... [--shape 1,3,416,416] [--opset 13]
"""
import argparse
import json
import os

import numpy as np
import tensorflow as tf
import tf2onnx
from google.protobuf import json_format
from tensorflow.core.framework import attr_value_pb2, graph_pb2, types_pb2
from tensorflow.python.framework import op_def_registry

NP_OF = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "float16": np.float16,
         "uint8": np.uint8, "int64": np.int64}


def read_weights(model_json: dict, folder: str) -> dict:
    """Name -> numpy array, from the weight shards the manifest lists, in order."""
    out = {}
    for group in model_json["weightsManifest"]:
        buf = b"".join(open(os.path.join(folder, p), "rb").read() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = w["shape"]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                dt = NP_OF[q["dtype"]]
                raw = np.frombuffer(buf, dt, count, off)
                off += raw.nbytes
                if "scale" in q:  # affine uint8/uint16 quantisation
                    raw = raw.astype(np.float32) * q["scale"] + q["min"]
                arr = raw.astype(NP_OF[q.get("original_dtype", w["dtype"])])
            else:
                dt = NP_OF[w["dtype"]]
                arr = np.frombuffer(buf, dt, count, off)
                off += arr.nbytes
            out[w["name"]] = arr.reshape(shape)
    return out


def restore_attrs(node) -> None:
    """Put back the attributes the TF.js converter stripped (defaults from the op registry)."""
    op_def = op_def_registry.get(node.op)
    if op_def is None:
        return
    for a in op_def.attr:
        if a.name in node.attr:
            continue
        if a.HasField("default_value"):
            node.attr[a.name].CopyFrom(a.default_value)
        elif a.name == "TArgs":  # _FusedConv2D / _FusedMatMul: one type per extra input
            t = node.attr["T"].type
            extra = len([i for i in node.input if not i.startswith("^")]) - 2
            node.attr[a.name].CopyFrom(
                attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(type=[t] * extra)))
        elif a.name == "index_type":  # TopKV2
            node.attr[a.name].CopyFrom(attr_value_pb2.AttrValue(type=types_pb2.DT_INT32))


def graph_def_of(model_json: dict, folder: str, shape=None) -> graph_pb2.GraphDef:
    topo = dict(model_json["modelTopology"])
    topo.pop("library", None)
    topo.pop("versions", None)
    gd = json_format.ParseDict(topo, graph_pb2.GraphDef())
    weights = read_weights(model_json, folder)
    for node in gd.node:
        if node.op == "Const" and node.name in weights:
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type).as_numpy_dtype
            arr = weights[node.name].astype(dtype)
            node.attr["value"].CopyFrom(
                attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(arr, shape=arr.shape)))
        if node.op == "Placeholder" and shape is not None:
            dims = node.attr["shape"].shape
            del dims.dim[:]
            for d in shape:
                dims.dim.add().size = d
        restore_attrs(node)
    return gd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_json")
    ap.add_argument("out")
    ap.add_argument("--input", action="append", required=True, help="tf_name=onnx_name")
    ap.add_argument("--output", action="append", required=True, help="tf_name=onnx_name")
    ap.add_argument("--opset", type=int, default=13)
    args = ap.parse_args()
    mj = json.load(open(args.model_json))
    gd = graph_def_of(mj, os.path.dirname(os.path.abspath(args.model_json)))
    ins = dict(s.split("=") for s in args.input)
    outs = dict(s.split("=") for s in args.output)
    with tf.Graph().as_default():
        tf.import_graph_def(gd, name="")
    model, _ = tf2onnx.convert.from_graph_def(
        gd, input_names=list(ins), output_names=list(outs), opset=args.opset)
    import onnx

    rename = {**ins, **outs}
    for n in model.graph.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    for v in list(model.graph.input) + list(model.graph.output):
        v.name = rename.get(v.name, v.name)
    model.producer_name = "tandem-models (tf2onnx %s)" % tf2onnx.__version__
    onnx.checker.check_model(model)
    onnx.save(model, args.out)
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
