#!/usr/bin/env bash
# Regenerates the wire stubs in src/myelin/_wire from proto/ (grpcio-tools, with .pyi type
# stubs; imports made relative so that the package needs no top-level `myelin.v1`). The stubs
# are committed, so that any standard build of the package (pip install, python -m build, a
# git URL) works without grpcio-tools or the proto files; tests/python/test_client_install.py
# fails when they are stale. Run it after changing proto/myelin/v1/myelin.proto.
# Usage: generate_stubs.sh [OUTPUT_DIR]   (needs the project's .venv: deploy/setup.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
wire=${1:-$here/src/myelin/_wire}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" -m grpc_tools.protoc -I"$root/proto" --python_out="$scratch" --pyi_out="$scratch" --grpc_python_out="$scratch" \
  "$root/proto/myelin/v1/myelin.proto"
sed -i 's/^from myelin\.v1 import myelin_pb2 as/from . import myelin_pb2 as/' "$scratch/myelin/v1/myelin_pb2_grpc.py"
printf '"""Wire stubs generated from proto/myelin/v1/myelin.proto by grpcio-tools (generate_stubs.sh)."""\n' > "$scratch/myelin/v1/__init__.py"
mkdir -p "$wire"
rm -f "$wire"/*.py "$wire"/*.pyi
cp "$scratch/myelin/v1/"*.py "$scratch/myelin/v1/"*.pyi "$wire/"
