#!/usr/bin/env bash
# Builds the myelin-client wheel into target/python/ the standard way (PEP 517, `python -m
# build`, from an sdist, so the sdist is proven complete too). The wire stubs are committed
# (generate_stubs.sh). Needs the project's .venv (deploy/setup.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
out=$root/target/python
rm -rf "$out"
mkdir -p "$out"
"$python" -m build --no-isolation --outdir "$out" "$here" >/dev/null
rm -rf "$here/build" "$here"/src/*.egg-info
ls "$out"/myelin_client-*.whl
