# Tandem: `make demo` runs the system on loopback, `make test` runs every test.
# Both start with `make setup`, which brings a fresh machine to a working state.

CARGO ?= cargo

.PHONY: setup build release deb test lint fuzz demo models bench-local bench-cascade bench-queue bench-hub bench-swap bench-fleet bench-eps bench-frames bench-detect bench-loop bench-console clean

# EPS=gpu,webgpu,trt-rtx also provisions those accelerator packages (scripts/provision-ep.sh).
setup:
	./scripts/setup.sh $(if $(EPS),--ep $(EPS))

build: setup
	$(CARGO) build --workspace --bins

release: setup
	$(CARGO) build --workspace --release --bins

# Debian packages of the release build in target/deb/: tandem-agent, tandem-hub and the
# tandem-onnxruntime they share (README "Deployment"). dpkg-deb only, no network.
deb: release
	./scripts/deb.sh --profile release --out target/deb

# The docs too: rustdoc's warnings (broken or private intra-doc links) fail it; about a minute,
# the dependencies' metadata coming from clippy's build.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

test: setup lint
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast
	./scripts/fuzz-smoke.sh

# Every fuzz target for FUZZ_SECONDS each (default 300; make test runs 5 s each).
FUZZ_SECONDS ?= 300
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz-smoke.sh

demo: release
	./scripts/demo.sh

# Rebuild every model from its sources (needs torch: a large Python venv; ~1 h on 2 cores).
models:
	./models/build_all.sh

bench-local: release
	./scripts/bench-local.sh

bench-cascade: release
	target/release/tandem-bench cascade

bench-queue: release
	target/release/tandem-bench queue

# QUIC vs TLS, hub batching on vs off (64 devices), hub REST vs Triton (the Triton peer
# installs into ~/.cache/tandem/peers-venv on first use). Last line: hub-batching-speedup.
bench-hub: release
	target/release/tandem-bench hub

# A model update under load: requests/s and failures before, during and after the swap, and
# bundle download throughput over QUIC on loopback. Last line: swap-failed-requests.
bench-swap: release
	target/release/tandem-bench swap

# 1,000 devices (own certificate and QUIC connection each) reconnecting after the hub is
# killed and restarted; last line `fleet-reconnect-s: N` (docs/benchmarks/fleet.md).
bench-fleet: release
	target/release/tandem-bench fleet

# Every model on every execution provider available here (CPU, the provisioned plugins, CUDA and
# TensorRT with the GPU runtime): p50/p99 at batch 1, throughput at concurrency 8, session build
# time, difference from the CPU outputs. Last line: `eps: best=<ep> speedup_vs_cpu=X`.
bench-eps: release
	target/release/tandem-bench eps

# Pre-processing and end-to-end time (ImageNet samples, 1080p and 4K frames): CPU before and
# after, wgpu, the inference floor and a FastAPI + PIL peer. Last line: `frames: ...`.
bench-frames: release
	target/release/tandem-bench frames

# Detection on models/detection-set (labelled photos): mAP@0.5, precision, recall of edge,
# cloud and cascade, offload share, per-frame latency. Last line: detect: cascade_map50_ratio.
bench-detect: release
	target/release/tandem-bench detect

# One turn of the learning loop on Fashion-MNIST under a camera-like shift, through the real hub
# and agents: edge accuracy, offload, cascade vs cloud-only before and after, a refused
# candidate (docs/benchmarks/loop.md). Last line: `loop: offload_before=X offload_after=Y ...`.
bench-loop: release
	target/release/tandem-bench loop

# The console's fleet page for 1,000 simulated devices in headless Chromium: the server time of
# its API calls and its render time. Last line: `console: devices=N server_ms=X render_ms=Y`.
bench-console: release
	target/release/tandem-bench console

clean:
	$(CARGO) clean
