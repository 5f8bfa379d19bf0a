#!/usr/bin/env python3
"""How far one head-only turn of the learning loop can go on the loop bench's text stream
(issue 13 item 8; docs/benchmarks/loop.md, "The text stream: what a head-only turn can reach").

An offline simulation of `tandem-bench loop --stream text --corrections 0.15`: the same
stream, seeded order, phases, splits, review share, start head, trainer and threshold rule,
with the models' outputs computed once (numpy + ONNX Runtime) instead of through the agents
and the hub. Then the same turn with other training sets, labels and heads, to see whether
any of them brings the offload at 99.5% of cloud-only accuracy a third lower.

What it reproduces (each from the Rust code named):
- the stream (bench/src/loop_bench/text.rs `load`): movie snippets of
  bench/data/loop-text/movies.jsonl without build_text.py's test split and without the
  shipped test and replay sentences, shuffled by Fisher-Yates with xorshift64* (stream.rs,
  seed 13), cut into feedback 2400, report-before 1000, settle 2000, report-after 1000;
- the start head 1.0.0 (start.rs): a head fitted from zero on the train split of tweets,
  Amazon and NYT (here by Newton's method on scikit-learn's objective, C = 4, which the
  hub's fit matches: docs/benchmarks/loop.md);
- what reaches the hub: every offloaded input (hard example) and half of the confident ones
  (shadow samples, drawn here with a seeded generator; weight 2 in the calibration);
- the splits (cloud-hub/src/feedback/split.rs: sha256 of a salt and the input's digest; the
  bench hub's 50 / 25 / 25, bench/src/loop_bench/rig.rs) and the review (review.rs: 15% of the examples by a hash of their digest, after
  the feedback phase and after the settle phase);
- the trainer (cloud-hub/src/train/: head.rs's standardised softmax regression pulled toward
  the serving head, full-batch gradient descent with Armijo steps, at most 300; pull.rs's
  grid on 4 folds, weakest within 0.005 of the best; replay.rs's 75% replay share; the
  gate's "better on the target split, at most 0.01 worse on the original set");
- the calibration (calibrate/fit.rs: the least offload keeping >= 99.5% of cloud-only
  accuracy on the calibration split; calibrate/truth.rs's judging of the teacher-labelled
  samples by the corrected ones, here with one confidence block, its shares moved one
  standard deviation against the edge).

Every threshold is fitted on the calibration split of a phase before the report phase it is
reported on, and every head on inputs outside the report phases: the report figures are on
inputs no fit saw. The last column breaks that on purpose and says so: the least offload on
report-after at 99.5% of cloud-only accuracy with the threshold fitted on report-after itself
against its true labels, what the head's confidence ranking allows with a perfect threshold.
Rows (b), (c), (d'), (e') train on more than one turn's feedback (every non-report sentence
outside the calibration split) and fit their threshold on the calibration split of all of
them: ceilings, not what the hub could do in one turn.

Needs numpy, onnx, onnxruntime and tokenizers (.venv), models/text-sentiment/cloud.onnx
(`make setup`). The models' outputs are cached in models/.build/ (first run: MiniLM ~1 min,
MPNet on ~9,000 sentences ~15 min on two shared cores).

Usage: loop_text_ceiling.py [--seed 13] [--corrections 0.15] [--sample-seed 1]
                            [--calib hub|teacher|truth] [--only 0,5,...]
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common  # noqa: E402
import prepare_loop_streams as pls  # noqa: E402  (the edge embedding, fit_head; numpy alone at import)

TEXT = os.path.join(HERE, "text-sentiment")
DOMAINS = ["movies", "tweets", "amazon", "nyt"]
LABELS = ["negative", "positive"]
PHASES = {"feedback": 2400, "before": 1000, "settle": 2000, "after": 1000}
GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
MASK64 = (1 << 64) - 1
ROWS_PER_DOMAIN = None  # all (a smaller number only to try the script's first run quickly)


# ----------------------------------------------------------------------------- data
def features():
    """Every sentence of the four domain files: the edge's head input (MiniLM's L2-normalised
    embedding) and the cloud model's probabilities (movie snippets outside the test split)."""
    rows = []
    for d in DOMAINS:
        with open(os.path.join(REPO, "bench", "data", "loop-text", f"{d}.jsonl"), encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()][:ROWS_PER_DOMAIN]
    texts = [r["text"] for r in rows]
    key = hashlib.sha256((common.sha256_file(os.path.join(TEXT, "edge.onnx"))
                          + common.sha256_file(os.path.join(TEXT, "cloud.onnx"))
                          + json.dumps(texts)).encode()).hexdigest()[:12]
    cache = os.path.join(common.CACHE_DIR, f"loop-text-ceiling-{key}.npz")
    if not os.path.exists(cache):
        t0 = time.time()
        s, emb = pls.edge_embedder()
        _, E = pls.run_batched(s, ["probs", emb], pls.tokenizer("edge-tokenizer.json"), texts)
        mov = [i for i, r in enumerate(rows) if r["domain"] == "movies" and r["split"] != "test"]
        sc = common.ort_session(os.path.join(TEXT, "cloud.onnx"))
        pc = np.full((len(texts), 2), np.nan, dtype=np.float32)
        pc[mov] = pls.run_batched(sc, ["probs"], pls.tokenizer("cloud-tokenizer.json"), [texts[i] for i in mov])[0]
        np.savez(cache, emb=E, pc=pc)
        print(f"# models' outputs computed in {time.time() - t0:.0f} s, cached in {cache}", flush=True)
    z = np.load(cache)
    return rows, z["emb"].astype(np.float64), z["pc"].astype(np.float64)


def xorshift_shuffle(n, seed):
    """bench/src/loop_bench/stream.rs `shuffle` of 0..n: Fisher-Yates with xorshift64*."""
    v = list(range(n))
    state = max(seed, 1)
    for i in range(n - 1, 0, -1):
        state ^= state >> 12
        state ^= (state << 25) & MASK64
        state ^= state >> 27
        r = (state * 0x2545F4914F6CDD1D) & MASK64
        j = r % (i + 1)
        v[i], v[j] = v[j], v[i]
    return v


def digest(text):
    return hashlib.sha256(text.encode("utf-8")).digest()


def split_of(text, train_pct=50, cal_pct=25):
    """cloud-hub/src/feedback/split.rs at the bench hub's 50 / 25 / 25 (bench/src/loop_bench/rig.rs)."""
    b = int.from_bytes(hashlib.sha256(b"tandem-split/1" + digest(text)).digest()[:8], "big") % 100
    return "train" if b < train_pct else "calibration" if b < train_pct + cal_pct else "test"


def reviewed(text, share):
    """bench/src/loop_bench/review.rs `picked`."""
    h = hashlib.sha256(f"tandem-bench-loop-review/{digest(text).hex()}".encode()).digest()
    return int.from_bytes(h[:8], "big") < share * MASK64


def fold_key(text):
    """cloud-hub/src/train/pull.rs `key`."""
    return int.from_bytes(hashlib.sha256(b"tandem-l2-folds/1" + text.encode("utf-8")).digest()[:8], "big")


# ----------------------------------------------------------------------------- heads
def newton_logreg(X, y, C=4.0):
    """scikit-learn's LogisticRegression(C) objective by Newton's method (prepare_loop_streams.py
    `fit_head`), as a two-class softmax head (W [d,2], b [2])."""
    w = pls.fit_head(X, y, C=C)
    return np.stack([-w[:-1] / 2, w[:-1] / 2], axis=1), np.array([-w[-1] / 2, w[-1] / 2])


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def hub_fit(start, X, T, l2, max_steps=300):
    """cloud-hub/src/train/head.rs `fit`: standardised features, warm start from and L2 pull
    toward `start` (weights and bias), full-batch gradient descent with Armijo backtracking.
    `T` is [n,2] targets: one-hot for hard labels (the hub), probabilities for distillation."""
    W0, b0 = start
    n = len(X)
    mean = X.mean(0)
    std = X.std(0)
    std[std <= 1e-6] = 1.0
    Z = (X - mean) / std
    pw, pb = W0 * std[:, None], b0 + mean @ W0
    w, b = pw.copy(), pb.copy()

    def ev(w, b, grad):
        lg = Z @ w + b
        m = lg.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(lg - m).sum(1))
        loss = float((lse - (T * lg).sum(1)).sum() / n)
        obj = loss + 0.5 * l2 * (((w - pw) ** 2).sum() + ((b - pb) ** 2).sum())
        if not grad:
            return obj, None
        G = (softmax(lg) - T) / n
        return obj, (Z.T @ G + l2 * (w - pw), G.sum(0) + l2 * (b - pb))

    step, obj_g = 1.0, ev(w, b, True)
    obj, g = obj_g
    for _ in range(max_steps):
        norm2 = float((g[0] ** 2).sum() + (g[1] ** 2).sum())
        if norm2 < 1e-12:
            break
        acc = None
        for _ in range(30):
            cw, cb = w - step * g[0], b - step * g[1]
            o, _ = ev(cw, cb, False)
            if o <= obj - 0.5 * step * norm2:
                acc = (cw, cb, o)
                break
            step *= 0.5
        if acc is None:
            break
        w, b, o = acc
        done = obj - o < 1e-9
        obj, g = ev(w, b, True)
        step *= 2.0
        if done:
            break
    W = w / std[:, None]
    return W, b - mean @ W


def pulled_fit(start, X, T, keys, grid=GRID, k=4, slack=0.005):
    """cloud-hub/src/train/pull.rs `choose` then the final fit: the weakest pull within
    `slack` of the best held-out accuracy on `k` folds by input."""
    distinct = np.unique(keys)
    fold = np.searchsorted(distinct, keys) % k
    y = T.argmax(1)
    right = np.zeros(len(grid))
    for f in range(k):
        tr, ho = fold != f, fold == f
        for gi, l2 in enumerate(grid):
            W, b = hub_fit(start, X[tr], T[tr], l2)
            right[gi] += ((X[ho] @ W + b).argmax(1) == y[ho]).sum()
    accs = right / len(X)
    l2 = min(l for l, a in zip(grid, accs) if a >= accs.max() - slack)
    return hub_fit(start, X, T, l2), l2


def mlp_fit(X, T, start, hidden=128, epochs=300, lr=3e-3, wd=1e-3, seed=0):
    """A small MLP head (384 -> hidden ReLU -> 2) on standardised features, plus the start
    head's logits as a skip (so it starts where the serving head is): full-batch Adam,
    weight decay. Returns a predict function giving probabilities."""
    rng = np.random.default_rng(seed)
    mean, std = X.mean(0), X.std(0) + 1e-6
    Z = (X - mean) / std
    W0, b0 = start
    base = X @ W0 + b0
    d = X.shape[1]
    p = {"A": rng.normal(0, 1 / np.sqrt(d), (d, hidden)), "a": np.zeros(hidden),
         "B": np.zeros((hidden, 2)), "c": np.zeros(2)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    n = len(X)
    for t in range(1, epochs + 1):
        H = np.maximum(Z @ p["A"] + p["a"], 0)
        G = (softmax(base + H @ p["B"] + p["c"]) - T) / n
        gB, gc = H.T @ G, G.sum(0)
        dH = (G @ p["B"].T) * (H > 0)
        grads = {"A": Z.T @ dH, "a": dH.sum(0), "B": gB, "c": gc}
        for k in p:
            g = grads[k] + (wd * p[k] if k in "AB" else 0)
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            p[k] -= lr * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)

    def predict(Xq):
        Hq = np.maximum((Xq - mean) / std @ p["A"] + p["a"], 0)
        return softmax(Xq @ W0 + b0 + Hq @ p["B"] + p["c"])
    return predict


def linear(head):
    W, b = head
    return lambda Xq: softmax(Xq @ W + b)


# ----------------------------------------------------------------------------- calibration
def fit_threshold(signal, edge_right, cloud_right, weight, factor=0.995):
    """cloud-hub/src/calibrate/fit.rs `fit`, objective keep_accuracy: midpoints between
    distinct signals, the least offload whose accuracy >= factor x cloud-only's."""
    o = np.argsort(signal, kind="stable")
    s, er, cr, w = signal[o], edge_right[o], cloud_right[o], weight[o]
    total = w.sum()
    cloud_acc = (cr * w).sum() / total
    right, off = (er * w).sum(), 0.0
    best = (0.0, right / total, 0.0) if right / total + 1e-12 >= factor * cloud_acc else None
    i = 0
    while i < len(s):
        v0 = s[i]
        while i < len(s) and s[i] == v0:
            off += w[i]
            right += (cr[i] - er[i]) * w[i]
            i += 1
        t = v0 + (s[i] - v0) / 2 if i < len(s) else (v0 + (1.0 - v0) / 2 if v0 < 1.0 else None)
        if t is None:
            continue
        acc, offl = right / total, off / total
        if acc + 1e-12 >= factor * cloud_acc and (best is None or offl < best[2] - 1e-12):
            best = (t, acc, offl)
    return best[0]


def judged(pe, pc, y_ref, corrected, y_true, weight, mode):
    """Calibration samples (signal, edge_right, cloud_right, weight), one row per outcome.
    mode "teacher": teacher-labelled samples taken as the truth; "hub": calibrate/truth.rs with
    one confidence block (teacher-labelled disagreements take the corrected disagreements'
    shares of edge right / cloud right / neither, moved one standard deviation against the
    edge; agreements keep both right); "truth": every sample against its true label."""
    sig, ea, ca = pe.max(1), pe.argmax(1), pc.argmax(1)
    if mode == "truth":
        return sig, (ea == y_true).astype(float), (ca == y_true).astype(float), weight
    er = (ea == y_ref).astype(float)
    cr = (ca == y_ref).astype(float)
    dis = ea != ca
    cd = corrected & dis
    if mode == "teacher" or cd.sum() < 20:
        return sig, er, cr, weight
    wd = weight[cd]
    pe_r = (wd * (ea[cd] == y_true[cd])).sum() / wd.sum()
    pc_r = (wd * (ca[cd] == y_true[cd])).sum() / wd.sum()
    sd = np.sqrt(max(pe_r * (1 - pe_r), 1e-9) / cd.sum())
    pe_r, pc_r = max(pe_r - sd, 0.0), min(pc_r + sd, 1.0)
    rest = 1 - pe_r - pc_r
    t = ~corrected & dis
    rows = [(sig[~t], er[~t], cr[~t], weight[~t])]
    for e, c, share in [(1.0, 0.0, pe_r), (0.0, 1.0, pc_r), (0.0, 0.0, rest)]:
        if share > 0:
            rows.append((sig[t], np.full(t.sum(), e), np.full(t.sum(), c), weight[t] * share))
    return tuple(np.concatenate(parts) for parts in zip(*rows))


def report(pe, pc, y, t):
    off = pe.max(1) < t
    casc = np.where(off, pc.argmax(1), pe.argmax(1))
    cloud = (pc.argmax(1) == y).mean()
    return {"edge": float((pe.argmax(1) == y).mean()), "offload": float(off.mean()),
            "ratio": float((casc == y).mean() / cloud), "threshold": float(t)}


# ----------------------------------------------------------------------------- the turn
class Stream:
    def __init__(self, args):
        rows, E, PC = features()
        with open(os.path.join(TEXT, "manifest.json")) as f:
            self.manifest_thr = json.load(f)["variants"]["edge"]["threshold"]
        sets = {}
        for name in ["replay", "test"]:
            with open(os.path.join(TEXT, "data", f"sentences-{name}.jsonl"), encoding="utf-8") as f:
                sets[name] = [json.loads(line) for line in f if line.strip()]
        index = {r["text"]: i for i, r in enumerate(rows)}
        left_out = {r["text"] for s in sets.values() for r in s}
        y_all = np.array([LABELS.index(r["label"]) for r in rows])
        stream = [i for i, r in enumerate(rows)
                  if r["domain"] == "movies" and r["split"] != "test" and r["text"] not in left_out]
        order = xorshift_shuffle(len(stream), args.seed)
        self.idx = np.array([stream[j] for j in order])
        self.texts = [rows[i]["text"] for i in self.idx]
        self.X, self.y, self.pc = E[self.idx], y_all[self.idx], PC[self.idx]
        self.split = np.array([split_of(t) for t in self.texts])
        self.reviewed = np.array([reviewed(t, args.corrections) for t in self.texts])
        self.keys = np.array([fold_key(t) for t in self.texts], dtype=np.uint64)
        cut, self.phase = 0, {}
        for name, n in PHASES.items():
            self.phase[name] = np.arange(cut, cut + n)
            cut += n
        self.rest = np.arange(cut, len(self.idx))  # sentences no phase sends
        ri = [index[r["text"]] for r in sets["replay"]]
        self.replay = (E[ri], y_all[ri], np.array([fold_key(r["text"]) for r in sets["replay"]], dtype=np.uint64))
        ti = [index[r["text"]] for r in sets["test"]]
        self.original = (E[ti], y_all[ti])
        src = np.array([r["domain"] in ("tweets", "amazon", "nyt") and r["split"] == "train" for r in rows])
        self.start = newton_logreg(E[src], y_all[src])
        print(f"# stream: {len(self.idx)} movie snippets (seed {args.seed}); start head on {int(src.sum())} "
              f"tweets+amazon+nyt train sentences; cloud on the stream {float((self.pc.argmax(1) == self.y).mean()):.4f}",
              flush=True)


def hub_sample(pe, thr, rng, shadow_rate=0.5):
    """Which inputs of a phase reach the hub (every offloaded one, `shadow_rate` of the
    confident ones) and their calibration weight (1 / the rate they were sent at)."""
    off = pe.max(1) < thr
    shadow = ~off & (rng.random(len(pe)) < shadow_rate)
    return off | shadow, np.where(off, 1.0, 1.0 / shadow_rate)


def turn(s, args, variant):
    """One turn; `variant` says what the head is trained on and how. Returns the report rows."""
    rng = np.random.default_rng(args.sample_seed)
    P = s.phase
    predict0 = linear(s.start)
    pe0 = predict0(s.X)
    teacher = s.pc.argmax(1)
    # feedback phase at the manifest threshold; the review after it
    sent_fb, w_fb = hub_sample(pe0[P["feedback"]], s.manifest_thr, rng)
    fb = P["feedback"][sent_fb]
    w = np.zeros(len(s.idx))
    w[fb] = w_fb[sent_fb]
    corrected = np.zeros(len(s.idx), dtype=bool)
    corrected[fb] = s.reviewed[fb]
    ref = np.where(corrected, s.y, teacher)
    cal = fb[s.split[fb] == "calibration"]
    t_before = fit_threshold(*judged(pe0[cal], s.pc[cal], ref[cal], corrected[cal], s.y[cal], w[cal], args.calib))
    before = report(pe0[P["before"]], s.pc[P["before"]], s.y[P["before"]], t_before)
    # report-before also reaches the hub (teacher labels: reviewed after the settle phase)
    sent_b, w_b = hub_sample(pe0[P["before"]], t_before, rng)
    held = np.concatenate([fb, P["before"][sent_b]])
    # the training set
    kind = variant.get("train", "hub")
    if kind == "hub":  # the train split of what the hub holds; corrections win
        tr = held[s.split[held] == "train"]
        labels = np.where(corrected[tr], s.y[tr], teacher[tr])
    elif kind == "all-teacher":  # (b) every non-report sentence outside the calibration split
        pool = np.concatenate([P["feedback"], P["settle"], s.rest])
        tr = pool[s.split[pool] != "calibration"]
        labels = np.where(s.reviewed[tr], s.y[tr], teacher[tr])
    elif kind == "all-truth":  # (c) oracle: the same sentences with their true labels
        pool = np.concatenate([P["feedback"], P["settle"], s.rest])
        tr = pool[s.split[pool] != "calibration"]
        labels = s.y[tr]
    T = np.eye(2)[labels]
    if variant.get("soft"):  # (a) the teacher's probabilities where the label is the teacher's
        from_teacher = {"hub": ~corrected[tr], "all-teacher": ~s.reviewed[tr]}.get(kind, np.zeros(len(tr), bool))
        T = np.where(from_teacher[:, None], s.pc[tr], T)
    rs = variant.get("replay_share", 0.75)
    n_rep = min(len(s.replay[0]), int(round(len(tr) * rs / (1 - rs)))) if rs > 0 else 0
    X = np.vstack([s.X[tr], s.replay[0][:n_rep]])
    T = np.vstack([T, np.eye(2)[s.replay[1][:n_rep]]])
    keys = np.concatenate([s.keys[tr], s.replay[2][:n_rep]])
    if variant.get("head") == "newton":  # from zero, converged, no pull (sklearn's objective)
        predict1, l2 = linear(newton_logreg(X, T.argmax(1), C=variant["C"])), f"C={variant['C']}"
    elif variant.get("head") == "mlp":
        predict1, l2 = mlp_fit(X, T, s.start, hidden=variant.get("hidden", 128)), None
    elif "l2" in variant:
        predict1, l2 = linear(hub_fit(s.start, X, T, variant["l2"])), variant["l2"]
    else:
        head, l2 = pulled_fit(s.start, X, T, keys)
        predict1 = linear(head)
    pe1 = predict1(s.X)
    # the gate: better on the target (test split of what the hub holds), original within 0.01
    tg = held[s.split[held] == "test"]
    tgy = np.where(corrected[tg], s.y[tg], teacher[tg])
    gate_t = ((pe0[tg].argmax(1) == tgy).mean(), (pe1[tg].argmax(1) == tgy).mean())
    Xo, yo = s.original
    gate_o = ((predict0(Xo).argmax(1) == yo).mean(), (predict1(Xo).argmax(1) == yo).mean())
    passed = gate_t[1] > gate_t[0] and gate_o[1] >= gate_o[0] - 0.01
    pe_new = pe1 if passed or variant.get("no_gate") else pe0
    # settle at the old threshold; the review after it; calibrate the serving version on it
    sent_s, w_s = hub_sample(pe_new[P["settle"]], t_before, rng)
    st = P["settle"][sent_s]
    w[st] = w_s[sent_s]
    corrected[st] = s.reviewed[st]
    ref = np.where(corrected, s.y, teacher)
    if variant.get("cal_pool"):  # ceiling rows: the calibration split of every non-report sentence
        pool = np.concatenate([P["feedback"], P["settle"], s.rest])
        cal = pool[s.split[pool] == "calibration"]
        wc, cc = np.ones(len(cal)), s.reviewed[cal]
    else:
        cal = st[s.split[st] == "calibration"]
        wc, cc = w[cal], corrected[cal]
    t_after = fit_threshold(*judged(pe_new[cal], s.pc[cal], np.where(cc, s.y[cal], teacher[cal]), cc, s.y[cal], wc,
                                    args.calib))
    after = report(pe_new[P["after"]], s.pc[P["after"]], s.y[P["after"]], t_after)
    # bound: the threshold fitted on report-after itself against its true labels
    ra = P["after"]
    one = np.ones(len(ra))
    after["best"] = report(pe_new[ra], s.pc[ra], s.y[ra], fit_threshold(*judged(
        pe_new[ra], s.pc[ra], s.y[ra], one > 0, s.y[ra], one, "truth")))["offload"]
    return {"before": before, "after": after, "l2": l2, "n_train": len(tr), "n_replay": n_rep,
            "gate": (gate_t, gate_o, passed)}


VARIANTS = [
    ("hub turn (hard labels, corrections win, replay, pull on folds)", {}),
    ("(a) distilled: teacher's probabilities as targets", {"soft": True}),
    ("(a') no replay", {"replay_share": 0.0}),
    ("(b) all non-report sentences, teacher + 15% corrections", {"train": "all-teacher", "cal_pool": True}),
    ("(b') same, distilled", {"train": "all-teacher", "soft": True, "cal_pool": True}),
    ("(c) oracle: all non-report sentences, true labels", {"train": "all-truth", "cal_pool": True}),
    ("(c') oracle, no replay", {"train": "all-truth", "replay_share": 0.0, "cal_pool": True}),
    ("(d) MLP head (128 hidden), hub's set", {"head": "mlp"}),
    ("(d') MLP head, oracle set", {"head": "mlp", "train": "all-truth", "cal_pool": True}),
    ("(e) refit from zero, converged, no pull or replay (sklearn C = 0.5)",
     {"head": "newton", "C": 0.5, "replay_share": 0.0}),
    ("(e') same, oracle set (C = 4)", {"head": "newton", "C": 4.0, "replay_share": 0.0, "train": "all-truth",
                                      "cal_pool": True}),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=13, help="the bench's stream seed (tandem-bench loop --seed)")
    ap.add_argument("--corrections", type=float, default=0.15, help="share of examples the operator reviews")
    ap.add_argument("--sample-seed", type=int, default=1, help="seed of the shadow samples' draw")
    ap.add_argument("--calib", choices=["hub", "teacher", "truth"], default="hub",
                    help="how the calibration judges teacher-labelled samples (truth: every true label)")
    ap.add_argument("--only", help="comma-separated variant numbers (0-based) to run")
    args = ap.parse_args()
    s = Stream(args)
    only = {int(x) for x in args.only.split(",")} if args.only else None
    print(f"# calibration labels: {args.calib}; corrections {args.corrections}; shadow draw seed {args.sample_seed}")
    print("| variant | train (+replay) | l2 | gate target | gate original | edge acc before -> after "
          "| offload before -> after | ratio before, after | offload change | after, threshold fitted on report-after (bound) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, (name, v) in enumerate(VARIANTS):
        if only is not None and i not in only:
            continue
        t0 = time.time()
        r = turn(s, args, v)
        b, a = r["before"], r["after"]
        (gt0, gt1), (go0, go1), ok = r["gate"]
        print(f"| {name} | {r['n_train']} (+{r['n_replay']}) | {r['l2'] if r['l2'] is not None else '-'} "
              f"| {gt0:.3f} -> {gt1:.3f} | {go0:.4f} -> {go1:.4f}{'' if ok else ' refused: 1.0.0 kept'} "
              f"| {b['edge']:.3f} -> {a['edge']:.3f} | {b['offload']:.3f} -> {a['offload']:.3f} "
              f"| {b['ratio']:.4f}, {a['ratio']:.4f} | {a['offload'] / b['offload'] - 1:+.0%} | {a['best']:.3f} |", flush=True)
        print(f"#   {time.time() - t0:.0f} s; thresholds {b['threshold']:.4f} -> {a['threshold']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
