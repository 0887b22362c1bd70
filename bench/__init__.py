"""Benchmarks: bp_gpu side by side with PyTorch, scikit-learn and plain NumPy (``bp-gpu bench``).

Not tests: nothing here asserts a timing. Installed as ``bp_gpu.bench`` so ``bp-gpu bench`` works
from any install; each module with a ``main`` also runs as a script (``python bench/run.py``).

- ``workloads``: the named workloads (W1, W2, W3, quick), their data and FLOP counts.
- ``peers``: one training epoch per tool, all from the same weights, data and batch order.
- ``worker``: one measurement in a fresh process (warm-up, one timed epoch, peak memory).
- ``micro``: copy bandwidth, GEMM ceiling, each fused step vs its unfused NumPy expression.
- ``harness``: runs the workers alternately, repeats, aggregates; ``report``: table, JSON, PNG.
- ``device_check``: the one prepared check for a lent GPU, within a time budget; ``device_timing``:
  its sleeping kernel, event timings and allocation counts.
"""
