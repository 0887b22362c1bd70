"""The CSV readers side by side: the old hand-written one (``bench/old_csv_reader.py``, the CLI's
reader before ``bp_gpu.data``: the ``csv`` module and a float() per field) against ``bp_gpu.data``
(pyarrow), on a generated CSV.

    python bench/csv_reader.py [--rows 290000] [--repeats 3] [--file PATH]

Each measurement runs in a fresh Python process (imports done before the clock starts) and
reports the wall time of the read and the process's peak resident memory (VmHWM), also above the
resident memory right after the imports. Modes:

- ``old``: ``read_table(path, "label")`` -> (X float64, y), the whole file in memory.
- ``new-read_all``: ``bp_gpu.data.open(path, target="label").read_all()``: the same result.
- ``new-stream``: the same file streamed once, chunk by chunk (``stats()``: per-feature mean and
  std), which is how training reads it: memory bounded by a few chunks, not the file.

The default file has 28 float features (8 significant digits, as ``%.8g``) and an integer label,
about 90 MB for 290,000 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("old", "new-read_all", "new-stream")


def make_csv(path: str, rows: int, features: int = 28, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write(",".join(f"x{i}" for i in range(features)) + ",label\n")
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            block = np.column_stack([rng.standard_normal((n, features)), rng.integers(0, 2, n)])
            np.savetxt(f, block, delimiter=",", fmt=["%.8g"] * features + ["%d"])


def child(mode: str, path: str) -> None:
    """One measurement, in this (fresh) process; prints one JSON line."""
    import numpy as np

    if mode == "old":
        from bp_gpu.bench.old_csv_reader import read_table

        def run():
            return read_table(path, "label")
    else:
        import pyarrow.compute
        import pyarrow.csv  # noqa: F401 - imported before the clock starts, as the old reader's csv module

        import bp_gpu.data as bd

        def run():
            ds = bd.open(path, target="label")
            return ds.read_all() if mode == "new-read_all" else ds.stats()

    from bp_gpu.bench.worker import status_kb

    base = status_kb("VmRSS")
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    shape = list(out[0].shape)
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_mb": status_kb("VmHWM") / 1024,
                      "above_imports_mb": (status_kb("VmHWM") - base) / 1024, "result_shape": shape,
                      "checksum": float(np.asarray(out[0], dtype=np.float64).sum())}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=290_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--file", help="a CSV with a 'label' column to read instead of a generated one")
    p.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or os.path.join(tmp, "bench.csv")
        if not args.file:
            make_csv(path, args.rows)
        size_mb = os.path.getsize(path) / 1e6
        print(f"{path}: {size_mb:.1f} MB; {args.repeats} fresh processes per mode, in turn")
        results: dict[str, list[dict]] = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, path],
                                     check=True, capture_output=True, text=True).stdout
                results[mode].append(json.loads(out.strip().splitlines()[-1]))
        print(f"{'mode':<14} {'seconds (min-max)':>22} {'MB/s':>7} {'peak RSS MB':>12} {'above imports':>14}")
        for mode, rs in results.items():
            ts = [r["seconds"] for r in rs]
            med = statistics.median(ts)
            print(f"{mode:<14} {med:>8.2f} ({min(ts):.2f}-{max(ts):.2f}) {size_mb / med:>9.0f} "
                  f"{max(r['peak_mb'] for r in rs):>12.0f} {max(r['above_imports_mb'] for r in rs):>14.0f}")
        sums = {m: rs[0]["checksum"] for m, rs in results.items() if m != "new-stream"}
        print(f"same X from both readers: {abs(sums['old'] - sums['new-read_all']) <= 1e-9 * abs(sums['old'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
