#!/usr/bin/env bash
# Everything that runs without a GPU, as CI runs it: the unit and kernel-compile tests, and the CUDA
# backend in Numba's simulator (a process of its own: the simulator must be switched on before
# numba.cuda is imported, and it replaces the real CUDA target for the whole process).
#
# The two halves run at once: each keeps one core busy for about as long as the other (the compile
# checks and the subprocess tests; the simulator's Python threads), so on CI's two cores this takes
# the time of the longer half, not their sum. The simulator's output is held in a file and printed
# when it ends, after the other half's; the exit status is non-zero when either half fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter by an absolute path: with a relative PATH entry (PATH=.venv/bin:$PATH) Python's
# sys.executable is relative too, and the tests that start it from another directory would miss it.
py=$(command -v python)
case "$py" in /*) ;; *) py="$PWD/$py" ;; esac

sim_log=$(mktemp "${TMPDIR:-/tmp}/bp_gpu_sim.XXXXXX")
NUMBA_ENABLE_CUDASIM=1 "$py" -m pytest -q tests/sim "$@" >"$sim_log" 2>&1 &
sim=$!
# A background job of a script ignores Ctrl-C: end it with the script, however the script ends.
trap 'kill "$sim" 2>/dev/null || true; rm -f "$sim_log"' EXIT

status=0
"$py" -m pytest -q "$@" || status=$?
sim_status=0
wait "$sim" || sim_status=$?
echo
echo "---- the CUDA backend in Numba's simulator (NUMBA_ENABLE_CUDASIM=1 pytest tests/sim) ----"
cat "$sim_log"
if [ "$status" -ne 0 ] || [ "$sim_status" -ne 0 ]; then
    echo "tests/run.sh: failed (unit and compile tests: exit $status; simulator tests: exit $sim_status)" >&2
    exit 1
fi
