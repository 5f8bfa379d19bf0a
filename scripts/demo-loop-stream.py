#!/usr/bin/env python3
"""The shifted stream of scripts/demo-loop.sh (standard library only): Fashion-MNIST test images
(models/vision-fashion/data, items FROM..FROM+N) brightened the way the hub's `brightness:D`
shift does (every pixel + D*255, clamped), sent through the agent's /v1/classify as PNGs over
one keep-alive connection, as a camera that moved into a brighter scene would.

Usage: demo-loop-stream.py AGENT_URL FROM N SHIFT [--correct-every K]
Prints one line: `answered N: edge right R (accuracy A), offloaded O (share S), cloud-answered
right C, corrections K; local version V xM, ...` (the edge model versions that answered). With
--correct-every K, every K-th answer is corrected with its true label (POST /v1/feedback), as a
person reviewing a few answers would.
"""
import argparse
import gzip
import http.client
import json
import struct
import sys
import urllib.parse
import zlib

DATA = "models/vision-fashion/data/t10k-"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return data[4 + 4 * ndim:], dims


def png(gray, w, h):
    raw = b"".join(b"\x00" + gray[r * w:(r + 1) * w] for r in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("start", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("brightness", type=float)
    ap.add_argument("--correct-every", type=int, default=0)
    a = ap.parse_args()
    images, (_, rows, cols) = read_idx(DATA + "images-idx3-ubyte.gz")
    labels, _ = read_idx(DATA + "labels-idx1-ubyte.gz")
    names = [line.strip() for line in open("models/vision-fashion/labels.txt") if line.strip()]
    u = urllib.parse.urlparse(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    size, delta = rows * cols, a.brightness * 255.0
    right = offloaded = cloud_right = corrections = 0
    versions = {}  # answers per local model version
    for n, i in enumerate(range(a.start, a.start + a.n)):
        px = bytes(min(255, max(0, round(v + delta))) for v in images[i * size:(i + 1) * size])
        conn.request("POST", "/v1/classify/vision-fashion", png(px, cols, rows),
                     {"content-type": "image/png"})
        r = conn.getresponse()
        answer = json.loads(r.read())
        if r.status != 200:
            sys.exit(f"the agent answered {r.status}: {answer}")
        truth = names[labels[i]]
        side = answer["local"] if answer["route"] == "cloud" else answer
        local = side["label"]
        version = side.get("version") or "?"
        versions[version] = versions.get(version, 0) + 1
        right += local == truth
        if answer["route"] == "cloud":
            offloaded += 1
            cloud_right += answer["label"] == truth
        if a.correct_every and n % a.correct_every == 0:
            body = json.dumps({"request_id": answer["request_id"], "label": truth})
            conn.request("POST", "/v1/feedback", body, {"content-type": "application/json"})
            fr = conn.getresponse()
            fr.read()
            corrections += fr.status < 300
    print(f"answered {a.n}: edge right {right} (accuracy {right / a.n:.3f}), offloaded {offloaded} "
          f"(share {offloaded / a.n:.3f}), cloud-answered right {cloud_right}, corrections {corrections}; "
          f"local version {', '.join(f'{v} x{k}' for v, k in sorted(versions.items()))}")


if __name__ == "__main__":
    main()
