#!/usr/bin/env bash
# GPU check, about 5 minutes where an NVIDIA GPU exists (on a CPU-only machine it says so and
# exits 0): installs the GPU build of ONNX Runtime (deploy/setup.sh --gpu), then
#   1. batched == batch 1 on the golden vectors of every bundled ONNX model, on CUDA
#      (server/tests/batching.rs with MYELIN_TEST_PROVIDER=cuda);
#   2. myelin-bench capacity and capacity --mixed against the server on CUDA;
#   3. models/duin/bench.py and models/meg/bench.py (decode and gallery search) on CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU on this machine: skipping the CUDA checks (CPU: cargo test -p myelin-server --test batching; target/release/myelin-bench capacity)"
  exit 0
fi
nvidia-smi -L
./deploy/setup.sh --gpu
LD_LIBRARY_PATH="$(cat runtime/gpu/library-path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
echo "[gpu] batching parity on CUDA" >&2
MYELIN_TEST_PROVIDER=cuda cargo test --release --locked -p myelin-server --test batching -- --nocapture
cargo build --release --locked --bins
echo "[gpu] capacity on CUDA" >&2
cuda=(--env 'MYELIN_MODELS__EXECUTION_PROVIDERS=["cuda"]')
timeout 150 target/release/myelin-bench capacity --start 100 --step 100 --max 600 --seconds 5 "${cuda[@]}" || echo "[gpu] capacity stopped at its time limit" >&2
timeout 90 target/release/myelin-bench capacity --mixed --start 4 --step 8 --max 60 --seconds 5 "${cuda[@]}" || echo "[gpu] mixed capacity stopped at its time limit" >&2
echo "[gpu] decoder benchmarks on CUDA" >&2
.venv-gpu/bin/python models/duin/bench.py --provider cuda "$@"
.venv-gpu/bin/python models/meg/bench.py --provider cuda
