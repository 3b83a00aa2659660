#!/usr/bin/env bash
# GPU check for the decoders: runs models/duin/bench.py (Du-IN decode) and models/meg/bench.py
# (MEG brain module decode, exact gallery search on the GPU at 10 k / 100 k / 1 M entries) with
# ONNX Runtime's CUDA execution provider where an NVIDIA GPU exists. On a CPU-only machine it says so and exits 0.
# Installs into .venv-gpu (git-ignored): onnxruntime-gpu 1.31.1, built for CUDA 13, and the
# CUDA 13 / cuDNN 9 runtime libraries from the nvidia-* PyPI wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU on this machine: skipping the CUDA benchmarks (CPU: .venv/bin/python models/duin/bench.py; .venv/bin/python models/meg/bench.py)"
  exit 0
fi
nvidia-smi -L
if [[ ! -x .venv-gpu/bin/python ]]; then
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install --quiet --progress-bar off onnxruntime-gpu==1.31.1 numpy onnx==1.23.2 \
    nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cudnn-cu13
fi
.venv-gpu/bin/python -c "import onnx" 2>/dev/null || .venv-gpu/bin/pip install --quiet --progress-bar off onnx==1.23.2
# Make the wheels' CUDA libraries visible to the provider library.
libs=$(.venv-gpu/bin/python - <<'PY'
import pathlib, site
dirs = {str(p.parent) for sp in site.getsitepackages() for p in pathlib.Path(sp, "nvidia").rglob("lib*.so*")}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
.venv-gpu/bin/python models/duin/bench.py --provider cuda "$@"
.venv-gpu/bin/python models/meg/bench.py --provider cuda
