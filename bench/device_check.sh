#!/usr/bin/env bash
# On a lent GPU machine (no network): make bp_gpu importable from this checkout without fetching
# anything, then run the device check. Usage: bash bench/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
if ! python3 -m pip install -q --no-deps --no-index --no-build-isolation -e .; then
    # No pip in this venv (uv makes venvs without it), or a setuptools that cannot build an
    # editable wheel offline: lay out the installed package (kernels/ as bp_gpu.kernels, bench/ as
    # bp_gpu.bench) as symlinks instead, and put it first on the path.
    shim="$(mktemp -d)"
    mkdir "$shim/bp_gpu"
    ln -s "$root"/bp_gpu/* "$shim/bp_gpu/"
    ln -s "$root/kernels" "$shim/bp_gpu/kernels"
    ln -s "$root/bench" "$shim/bp_gpu/bench"
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
    echo "device_check.sh: pip install failed; using $root through $shim on PYTHONPATH" >&2
fi
(cd / && python3 -c "import bp_gpu.kernels._launch") || { echo "device_check.sh: bp_gpu is not importable" >&2; exit 3; }
exec python3 bench/device_check.py "$@"
