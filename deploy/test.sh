#!/usr/bin/env bash
# Set up (idempotent), then run the whole test suite: formatting and lints (cargo fmt, clippy
# with warnings as errors; ruff and mypy --strict on the Python client), Rust unit tests, the
# floor-plan check (server/tests/house.rs), the Rust end-to-end suite (it starts the real
# `myelin` binary), the book (mdbook build, every link and anchor checked by LinkChecker), and the
# Python real-peer tests (the myelin-client package, built the standard way, and a grpcio-tools
# client generated from proto/ for the raw wire contract), two at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '[test] %s (at %dm%02ds)\n' "$1" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) >&2; }
./deploy/setup.sh
step "cargo fmt --check"
cargo fmt --all --check
step "building"
cargo build --locked --workspace --bins
step "building the Python client (myelin-client, python -m build) and installing it into .venv"
./client/python/build_wheel.sh >/dev/null
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps target/python/myelin_client-*.whl
export MYELIN_BIN="$PWD/target/debug/myelin"
# The real-time test pushes ten minutes of EEG at the pace of a live rig; it starts as soon as
# the binary exists and runs in its own pytest process alongside everything below (it needs
# little CPU), so it adds only what outlasts them.
step "python real-time test started in the background (pytest -m realtime)"
realtime_log=target/realtime-test.log
setsid .venv/bin/python -m pytest -q -m realtime tests/python >"$realtime_log" 2>&1 &
realtime_pid=$!
trap 'kill -- -"$realtime_pid" 2>/dev/null || true' EXIT
step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "cargo test"
cargo test --locked --workspace
step "python client: ruff check, ruff format --check, mypy --strict"
(cd client/python && ../../.venv/bin/ruff check --quiet . && ../../.venv/bin/ruff format --quiet --check . && ../../.venv/bin/mypy)
step "the book: mdbook build docs, LinkChecker on it and on README.md"
book_log=$(.tools/bin/mdbook build docs 2>&1) || { echo "$book_log" >&2; exit 1; }
if grep -E 'WARN|ERROR' <<<"$book_log" >&2; then exit 1; fi
# LinkChecker run as root drops to user nobody, who may not read a clone in a private directory:
# it checks a world-readable copy of the book, its sources and the repository's Markdown files.
links=$(mktemp -d)
cp -r docs/book "$links/book"
git ls-files -z --cached --others --exclude-standard '*.md' | xargs -0 cp --parents -t "$links"
cp -r --parents docs/src -t "$links"
chmod -R a+rX "$links"
links_rc=0
.venv/bin/linkchecker --config docs/linkcheckerrc --no-status --quiet "$links/book/index.html" "$links/README.md" 2>&1 |
  grep -v 'dropping privileges' >&2 || links_rc=${PIPESTATUS[0]}
rm -rf "$links"
(( links_rc == 0 )) || { echo "[test] broken links in the book or README.md" >&2; exit 1; }
step "python real-peer tests (pytest-xdist, 2 workers)"
.venv/bin/python -m pytest -q -n 2 -m "not realtime" tests/python
step "waiting for the python real-time test"
realtime_rc=0
wait "$realtime_pid" || realtime_rc=$?
trap - EXIT
cat "$realtime_log"
step "done"
exit "$realtime_rc"
