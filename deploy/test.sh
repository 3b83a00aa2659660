#!/usr/bin/env bash
# Set up (idempotent), then run the whole test suite: Rust unit tests, the Rust end-to-end suite
# (it starts the real `myelin` binary), and the Python real-peer tests (a grpcio-tools client
# generated from proto/, scipy for DSP parity).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/setup.sh
echo "[test] building" >&2
cargo build --locked --workspace --bins
echo "[test] cargo test" >&2
cargo test --locked --workspace
echo "[test] python real-peer tests" >&2
MYELIN_BIN="$PWD/target/debug/myelin" .venv/bin/python -m pytest -q tests/python
