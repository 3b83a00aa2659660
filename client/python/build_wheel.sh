#!/usr/bin/env bash
# Builds the myelin-client wheel into target/python/ (deploy/test.sh runs this): generates the
# wire stubs from proto/ into src/myelin/_wire (grpcio-tools, with .pyi type stubs; imports made
# relative so that the package does not need a top-level `myelin.v1`), then builds the wheel.
# Needs the project's .venv (deploy/setup.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
out=$root/target/python
wire=$here/src/myelin/_wire
rm -rf "$wire" "$here/build" "$out"
mkdir -p "$wire" "$out"
"$python" -m grpc_tools.protoc -I"$root/proto" --python_out="$wire" --pyi_out="$wire" --grpc_python_out="$wire" \
  "$root/proto/myelin/v1/myelin.proto"
mv "$wire/myelin/v1/"* "$wire/" && rm -r "$wire/myelin"
sed -i 's/^from myelin\.v1 import myelin_pb2 as/from . import myelin_pb2 as/' "$wire/myelin_pb2_grpc.py"
printf '"""Wire stubs generated from proto/myelin/v1/myelin.proto by grpcio-tools (build_wheel.sh)."""\n' > "$wire/__init__.py"
"$python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$out" "$here"
rm -rf "$here/build" "$here"/src/*.egg-info
ls "$out"/myelin_client-*.whl
