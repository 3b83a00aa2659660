#!/usr/bin/env bash
# Set up (idempotent) and run Myelin on its embedded default: bundled models from models/, a
# built-in real-time replay of a bundled real EEG recording, live predictions printed here,
# Prometheus metrics on http://127.0.0.1:9464/metrics. Ctrl-C stops cleanly.
# Extra arguments go to `myelin` (e.g. `deploy/run.sh serve --config deploy/myelin.example.toml`).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/setup.sh
echo "[run] building myelin (release; the first build takes a few minutes)" >&2
cargo build --release --locked --bin myelin
exec ./target/release/myelin "$@"
