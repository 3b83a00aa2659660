#!/usr/bin/env bash
# Side-by-side benchmarks: the server at REV (default: the commit before the session workers,
# 7b4e995) and the server of this checkout, each benchmark run back to back by this checkout's
# myelin-bench on the same machine, so that they compare as ratios.
#
#   ./deploy/bench-compare.sh [REV]        # results in target/bench-compare/<bench>-{before,now}.txt
#
# REV is built in a git worktree under target/bench-compare/ (its own target directory: the
# first run takes a few minutes). Benchmarks: stream (60 s), lsl (30 s), erp, meg (60 s).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-7b4e995}
out=target/bench-compare
mkdir -p "$out"
./deploy/setup.sh
if [[ ! -d $out/before ]]; then
  git worktree add --detach "$out/before" "$rev"
else
  git -C "$out/before" checkout --quiet --detach "$rev"
fi
echo "[bench-compare] building $rev" >&2
(cd "$out/before" && CARGO_TARGET_DIR="$PWD/../before-target" cargo build --locked --release --bins)
echo "[bench-compare] building this checkout" >&2
cargo build --locked --release --bins
before="$PWD/$out/before-target/release/myelin"
now="$PWD/target/release/myelin"
for bench in "stream --seconds 60" "lsl --seconds 30" "erp" "meg --seconds 60"; do
  name=${bench%% *}
  for which in before now; do
    binary=$before
    [[ $which == now ]] && binary=$now
    echo "[bench-compare] $name, $which" >&2
    # shellcheck disable=SC2086 # $bench is the subcommand and its flags
    target/release/myelin-bench $bench --server "$binary" > "$out/$name-$which.txt" 2>&1
    grep -v "INFO|\|ERR|" "$out/$name-$which.txt" | tail -n 8
  done
done
