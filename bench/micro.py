"""Kernel microbenchmarks on the CPU: the machine's ceilings, and each fused step against the
unfused NumPy expression it replaces (``bp_gpu.cpu_steps`` vs ``bp_gpu.steps_numpy``).

- copy bandwidth: ``np.copyto`` of a 256 MiB float32 array, bytes read + written per second;
- GEMM ceiling: float32 GEMM at 2048^3 and 4096x1024x1024 through NumPy's BLAS and, when
  installed, PyTorch's; the best rate is the ceiling the end-to-end FLOP fractions use;
- steps at the shapes W1 and W2 run them: time, GB/s of the bytes the step must move at least,
  and that as a fraction of the copy bandwidth.

Each measurement is validated first (fused vs unfused outputs agree) and then timed: a warm-up
call, then the median of ``reps`` calls. GPU kernels are measured by ``bench/device_check.py``.
Run: ``python bench/micro.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def median_time(fn: Callable[[], Any], reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def copy_bandwidth(n_bytes: int, reps: int) -> float:
    """Bytes moved per second (read + write) by a large copy."""
    a = np.ones(n_bytes // 4, np.float32)
    b = np.empty_like(a)
    return 2 * a.nbytes / median_time(lambda: np.copyto(b, a), reps)


def gemm_rates(reps: int, quick: bool) -> dict[str, float]:
    """GFLOP/s of float32 GEMMs by library and shape."""
    shapes = [(256, 256, 256)] if quick else [(2048, 2048, 2048), (4096, 1024, 1024)]
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    for m, k, n in shapes:
        A = rng.standard_normal((m, k), dtype=np.float32)
        B = rng.standard_normal((k, n), dtype=np.float32)
        C = np.empty((m, n), np.float32)
        out[f"numpy {m}x{k}x{n}"] = 2 * m * k * n / median_time(lambda: np.matmul(A, B, out=C), reps) / 1e9
        try:
            import torch
        except ImportError:
            continue
        At, Bt, Ct = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(C)
        out[f"torch {m}x{k}x{n}"] = 2 * m * k * n / median_time(lambda: torch.matmul(At, Bt, out=Ct), reps) / 1e9
    return out


def step_cases(B: int, O: int, P: int, rng: np.random.Generator) -> list[tuple[str, int, Callable, Callable, Callable]]:
    """(name, minimal bytes moved, make_args, fused, unfused) for each step at batch B, width O,
    P parameters. make_args returns fresh inputs so the validation compares like with like."""
    from bp_gpu import cpu_steps as C
    from bp_gpu import steps_numpy as S

    f4 = 4
    A = rng.standard_normal((B, O), dtype=np.float32) * 3
    b = rng.standard_normal(O, dtype=np.float32)
    Z = rng.random((B, O), dtype=np.float32)
    T = (rng.random((B, 1)) < 0.5).astype(np.float32)
    A1 = rng.standard_normal((B, 1), dtype=np.float32)
    p = rng.standard_normal(P, dtype=np.float32)
    g = rng.standard_normal(P, dtype=np.float32)
    e = np.empty(0, np.float32)

    def fwd(mod):
        return lambda a: mod.bias_sigmoid_forward(a[0], b)

    def bwd(mod):
        return lambda a: mod.sigmoid_delta_backward(a[0], Z, a[1])

    def out(mod):
        return lambda a: mod.output_loss_delta(A1, b[:1], T, 1, 1.0 / B, a[0], a[1], a[2])

    def opt(mod):
        return lambda a: mod.optimizer_update(0, a[0], g, e, e, P - O, 0.01, 0, 0, 0, 0, 0, 1, 1)

    return [
        ("bias_sigmoid_forward", 2 * B * O * f4, lambda: [A.copy()], fwd(C), fwd(S)),
        ("sigmoid_delta_backward", 3 * B * O * f4, lambda: [A.copy(), np.empty(O, np.float32)], bwd(C), bwd(S)),
        ("output_loss_delta", 3 * B * f4, lambda: [np.empty((B, 1), np.float32), np.empty(1, np.float32), np.zeros(2)],
         out(C), out(S)),
        ("optimizer_update (sgd)", 3 * P * f4, lambda: [p.copy()], opt(C), opt(S)),
    ]


def step_benchmarks(copy_bw: float, reps: int, quick: bool) -> list[dict[str, Any]]:
    shapes = {"quick": (64, 16, 500)} if quick else {"W1": (1024, 64, 6_337), "W2": (4096, 1024, 1_312_769)}
    rng = np.random.default_rng(0)
    rows = []
    for wname, (B, O, P) in shapes.items():
        for name, nbytes, make, fused, unfused in step_cases(B, O, P, rng):
            a_f, a_u = make(), make()
            fused(a_f)
            unfused(a_u)
            # Relative to the largest value: db sums B terms, its size grows with B.
            err = max(float(np.max(np.abs(x - y)) / max(1.0, np.max(np.abs(y)))) for x, y in zip(a_f, a_u))
            if err > 1e-5:
                raise RuntimeError(f"{name} at {wname}: fused and unfused differ by {err:g}")
            t_f = median_time(lambda: fused(a_f), reps)
            t_u = median_time(lambda: unfused(a_u), reps)
            rows.append({
                "step": name, "shape": wname, "B": B, "O": O, "P": P, "bytes": nbytes,
                "fused_us": t_f * 1e6, "unfused_us": t_u * 1e6, "speedup": t_u / t_f,
                "fused_GBps": nbytes / t_f / 1e9, "unfused_GBps": nbytes / t_u / 1e9,
                "fused_frac_copy": nbytes / t_f / copy_bw, "max_rel_diff": err,
            })
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    reps = 5 if quick else 50
    copy_bw = copy_bandwidth(2**22 if quick else 2**28, reps)
    gemm = gemm_rates(3 if quick else 10, quick)
    best = max(gemm, key=gemm.get)
    return {
        "copy_GBps": copy_bw / 1e9,
        "gemm_GFLOPs": gemm,
        "gemm_ceiling_GFLOPs": gemm[best],
        "gemm_ceiling_from": best,
        "steps": step_benchmarks(copy_bw, reps, quick),
    }


def format_micro(m: dict[str, Any]) -> str:
    lines = [f"copy bandwidth {m['copy_GBps']:.1f} GB/s (read + write);  GEMM ceiling "
             f"{m['gemm_ceiling_GFLOPs']:.0f} GFLOP/s ({m['gemm_ceiling_from']})",
             "  GEMM rates: " + ", ".join(f"{k} {v:.0f}" for k, v in m["gemm_GFLOPs"].items()),
             f"  {'step':24s} {'shape':5s} {'fused us':>9s} {'NumPy us':>9s} {'speedup':>7s} "
             f"{'GB/s':>6s} {'of copy':>7s}"]
    for r in m["steps"]:
        lines.append(f"  {r['step']:24s} {r['shape']:5s} {r['fused_us']:9.1f} {r['unfused_us']:9.1f} "
                     f"{r['speedup']:6.1f}x {r['fused_GBps']:6.1f} {r['fused_frac_copy']:6.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke test)")
    p.add_argument("--json", help="write the results to this JSON file")
    a = p.parse_args(argv)
    m = run(a.quick)
    print(format_micro(m))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(m, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
