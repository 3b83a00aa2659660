#!/usr/bin/env bash
# Side-by-side benchmarks: the server at REV (default: the commit before the deadline-first
# scheduler, 1330a18; the session workers were compared against 7b4e995) and the server of this
# checkout, each benchmark run back to back by this checkout's myelin-bench on the same machine,
# so that they compare as ratios. Each server reads the model cards of its own tree.
#
#   ./deploy/bench-compare.sh [REV]        # results in target/bench-compare/<bench>-{before,now}.txt
#
# REV is built in a git worktree under target/bench-compare/ (its own target directory: the
# first run takes a few minutes). Benchmarks: stream (60 s), lsl (30 s), erp, meg (60 s),
# capacity (ramped real-time sessions), capacity --mixed (ramped units of ERP, Du-IN and MEG
# rigs). BENCHES="stream capacity" runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-1330a18}
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
declare -A flags=([stream]="stream --seconds 60" [lsl]="lsl --seconds 30" [erp]="erp" [meg]="meg --seconds 60"
  [capacity]="capacity" [mixed]="capacity --mixed")
for name in ${BENCHES:-stream lsl erp meg capacity mixed}; do
  for which in before now; do
    binary=$before models="$PWD/$out/before/models"
    [[ $which == now ]] && binary=$now models="$PWD/models"
    extra=()
    # The capacity benchmarks choose the model directory themselves; tell them each tree's.
    [[ $name == capacity ]] && extra=(--env "MYELIN_MODELS__DIR=$models/fixtures")
    [[ $name == mixed ]] && extra=(--env "MYELIN_MODELS__DIR=$models")
    echo "[bench-compare] $name, $which" >&2
    # shellcheck disable=SC2086 # the subcommand and its flags
    MYELIN_MODELS__DIR="$models" target/release/myelin-bench ${flags[$name]} --server "$binary" "${extra[@]}" > "$out/$name-$which.txt" 2>&1
    grep -v "INFO|\|ERR|" "$out/$name-$which.txt" | tail -n 12
  done
done
