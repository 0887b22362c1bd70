#!/usr/bin/env bash
# On a lent GPU machine (no network): install bp_gpu from this checkout without fetching
# anything, then run the device check. Usage: bash bench/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-deps --no-index --no-build-isolation -e .
exec python3 bench/device_check.py "$@"
