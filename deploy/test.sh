#!/usr/bin/env bash
# Set up (idempotent), then run the whole test suite: formatting and lints (cargo fmt, clippy
# with warnings as errors), Rust unit tests, the floor-plan check (server/tests/house.rs), the
# Rust end-to-end suite (it starts the real `myelin` binary), and the Python real-peer tests
# (the myelin-client package, built as a wheel here, and a grpcio-tools client generated from
# proto/ for the raw wire contract; scipy for DSP parity).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/setup.sh
echo "[test] cargo fmt --check" >&2
cargo fmt --all --check
echo "[test] cargo clippy" >&2
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "[test] building" >&2
cargo build --locked --workspace --bins
echo "[test] building the Python client wheel (myelin-client) and installing it into .venv" >&2
./client/python/build_wheel.sh >/dev/null
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps target/python/myelin_client-*.whl
export MYELIN_BIN="$PWD/target/debug/myelin"
# The real-time test pushes ten minutes of EEG at the pace of a live rig; it runs in its own
# pytest process alongside everything below, so it adds only what outlasts them.
echo "[test] python real-time test started in the background (pytest -m realtime)" >&2
realtime_log=target/realtime-test.log
setsid .venv/bin/python -m pytest -q -m realtime tests/python >"$realtime_log" 2>&1 &
realtime_pid=$!
trap 'kill -- -"$realtime_pid" 2>/dev/null || true' EXIT
echo "[test] cargo test" >&2
cargo test --locked --workspace
echo "[test] python real-peer tests" >&2
.venv/bin/python -m pytest -q -m "not realtime" tests/python
echo "[test] waiting for the python real-time test" >&2
realtime_rc=0
wait "$realtime_pid" || realtime_rc=$?
trap - EXIT
cat "$realtime_log"
exit "$realtime_rc"
