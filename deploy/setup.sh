#!/usr/bin/env bash
# Installs everything Myelin's build, server and tests need on a fresh machine, idempotently:
#   * .venv/  Python packages pinned in deploy/requirements.txt (model scripts, real-peer tests)
#   * runtime/libonnxruntime.so.1.31.1  ONNX Runtime, taken from the pinned onnxruntime wheel
#     (the server loads it at run time; .cargo/config.toml points ORT_DYLIB_PATH at it)
#   * runtime/liblsl.so.2  liblsl 1.18, taken from the pinned pylsl wheel (LabStreamingLayer)
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
log "ready"
