#!/usr/bin/env bash
# On a lent GPU machine (no network): make bp_gpu importable from this checkout without fetching
# anything, then run the device check within its budget.
# Usage: bash bench/device_check.sh [--budget SECONDS] [--parts NAME,...]   (default budget 420 s)
set -uo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
if pip_out="$(python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . 2>&1)"; then
    export BP_GPU_INSTALL="pip install --no-index -e . (offline): ok"
else
    # No pip in this venv (uv makes venvs without it), or a setuptools that cannot build an
    # editable wheel offline: lay out the installed package (kernels/ as bp_gpu.kernels, bench/ as
    # bp_gpu.bench) as symlinks instead, and put it first on the path.
    shim="$(mktemp -d)"
    mkdir "$shim/bp_gpu"
    ln -s "$root"/bp_gpu/* "$shim/bp_gpu/"
    ln -s "$root/kernels" "$shim/bp_gpu/kernels"
    ln -s "$root/bench" "$shim/bp_gpu/bench"
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
    why="$(printf '%s\n' "$pip_out" | tail -n 1)"
    export BP_GPU_INSTALL="pip install failed (${why:-no message}); the checkout as a symlink tree on PYTHONPATH"
    echo "device_check.sh: $BP_GPU_INSTALL" >&2
fi
(cd / && python3 -c "import bp_gpu.kernels._launch") || { echo "device_check.sh: bp_gpu is not importable" >&2; exit 3; }
exec python3 bench/device_check.py "$@"
