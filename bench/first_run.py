"""What the first ``fit`` after an install costs: the CPU steps are compiled by Numba on first use
and cached on disk (``cache=True``), so the first run in a fresh environment compiles and every
later one loads the cache.

    python bench/first_run.py [--repeats 3]

Each measurement is a fresh Python process fitting the README's demo model (breast cancer,
standardised, ``[30, 32, 1]``, Adam, float32, batch 32, 60 epochs, ``backend="cpu"``) twice:
``cold`` with ``NUMBA_CACHE_DIR`` pointing at an empty directory (as after ``pip install``),
``warm`` on the cache the cold run left. It prints the import time of ``bp_gpu`` (with NumPy and
Numba), the first fit (compiling or loading the steps, then training) and a second fit in the same
process (training alone); the minimum over the repeats. The first fit's CPU time (compiling is
single-threaded) is printed too: it varies less than wall time on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy, numba, bp_gpu
t1 = time.perf_counter()
from sklearn.datasets import load_breast_cancer
X, y = load_breast_cancer(return_X_y=True)
X = (X - X.mean(axis=0)) / X.std(axis=0)
def fit():
    t, c = time.perf_counter(), time.process_time()
    bp_gpu.MLPClassifier((32,), learning_rate=0.01, batch_size=32, epochs=60, backend="cpu", random_state=0).fit(X, y)
    return time.perf_counter() - t, time.process_time() - c
(first, first_cpu), (second, _) = fit(), fit()
print(json.dumps({"import": t1 - t0, "first fit": first, "first fit cpu": first_cpu, "second fit": second}))
"""


def measure(cache_dir: str) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            runs["cold"].append(measure(cache))
            runs["warm"].append(measure(cache))
    print(f"{'cache':6} {'import s':>9} {'first fit s':>12} {'(CPU s)':>8} {'second fit s':>13}"
          f"   (min of {args.repeats})")
    for kind, rows in runs.items():
        best = {k: min(r[k] for r in rows) for k in rows[0]}
        print(f"{kind:6} {best['import']:9.2f} {best['first fit']:12.2f} {best['first fit cpu']:8.2f} "
              f"{best['second fit']:13.2f}")


if __name__ == "__main__":
    main()
