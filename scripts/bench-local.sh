#!/usr/bin/env bash
# `make bench-local`: local inference overhead (floor, engine, HTTP API, FastAPI peer).
# Prints the table; the last line is `local-overhead-p50: X.XX`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec target/release/tandem-bench local "$@"
