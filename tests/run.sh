#!/usr/bin/env bash
# Everything that runs without a GPU, as CI runs it: the unit and kernel-compile tests, then the
# CUDA backend in Numba's simulator (a process of its own: the simulator must be switched on
# before numba.cuda is imported, and it replaces the real CUDA target for the whole process).
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter by an absolute path: with a relative PATH entry (PATH=.venv/bin:$PATH) Python's
# sys.executable is relative too, and the tests that start it from another directory would miss it.
py=$(command -v python)
case "$py" in /*) ;; *) py="$PWD/$py" ;; esac
"$py" -m pytest -q "$@"
NUMBA_ENABLE_CUDASIM=1 "$py" -m pytest -q tests/sim "$@"
