"""``bp-gpu bench --ranks 1,2``: data-parallel scaling on this machine's cores.

For each workload and each R in ``--ranks``, a fresh ``mpiexec -n R`` job (``python -m
bp_gpu.bench.scaling``) trains the workload's network on the CPU backend with R processes of
``threads // R`` threads each (so R = 1 with every thread against R processes of one thread on a
machine of R cores). The global batch is the workload's (``batch // R`` rows per process), so every
R takes the same steps with the same math; each process holds its shard of the rows
(``split_range``). Per job: one warm-up epoch, then ``--repeats`` timed epochs through
``bp_gpu.distributed.ShardedSource`` (the path ``MLPClassifier(distributed=True)`` trains on):
epoch time, samples/s, the wall time spent in the gradient all-reduce per step (including waiting
for the slower process) and its share of the step, and the same all-reduce alone right after a
barrier (the transfer without the waiting).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .worker import run_isolated, thread_env
from .workloads import WORKLOADS, initial_weights, make_data

LEARNING_RATE = 0.1


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    here = Path(os.path.abspath(sys.executable)).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def measure(workload: str, repeats: int) -> dict[str, Any] | None:
    """One process's part of the job; rank 0 returns the results, the others None."""
    from mpi4py import MPI

    from bp_gpu import MLP
    from bp_gpu.data.dataset import split_range
    from bp_gpu.distributed import HostReducer, ProcessGroup, ShardedSource
    from bp_gpu.optim import SGD
    from bp_gpu.train import ArraySource

    group = ProcessGroup(MPI.COMM_WORLD)
    w = WORKLOADS[workload]
    X, T = make_data(w)
    lo, hi = split_range(w.samples, group.rank, group.size)
    X, T = np.ascontiguousarray(X[lo:hi]), np.ascontiguousarray(T[lo:hi])
    net = MLP(w.sizes, backend="cpu", dtype="float32")
    net.set_weights(initial_weights(w))
    opt = SGD(net, LEARNING_RATE)
    reducer = HostReducer(group, net._engine)
    source = ShardedSource(group, ArraySource(net._engine, X, T, w.batch // group.size), reducer)
    rng = np.random.default_rng(group.rank)
    t0 = time.perf_counter()
    source.run_epoch(net, opt, rng)
    warmup = time.perf_counter() - t0
    epochs, reduce_s, losses = [], [], []
    for _ in range(repeats):
        group.bcast_array(np.zeros(1), "the start of a timed epoch")  # start together
        s0 = reducer.seconds
        t0 = time.perf_counter()
        losses.append(source.run_epoch(net, opt, rng))
        epochs.append(time.perf_counter() - t0)
        reduce_s.append(reducer.seconds - s0)
    # The all-reduce alone: every rank enters together, so this is the transfer, not the waiting.
    buf = np.ones(net.n_params, np.float32)
    alone = []
    for _ in range(20):
        group.bcast_array(np.zeros(1), "lining up")
        t0 = time.perf_counter()
        group.sum(buf, "the all-reduce alone")
        alone.append(time.perf_counter() - t0)
    times = group.allgather((epochs, reduce_s), "gathering the timings")
    if group.rank != 0:
        return None
    # An epoch ends when its slowest process ends: per repeat the largest time over the ranks.
    epoch_s = [max(t[0][i] for t in times) for i in range(repeats)]
    steps = source.steps_per_epoch
    reduce_per_step = [statistics.mean(t[1][i] for t in times) / steps for i in range(repeats)]
    med = statistics.median(epoch_s)
    return {
        "workload": workload, "ranks": group.size, "threads_per_rank": int(os.environ.get("OMP_NUM_THREADS", 0)),
        "epoch_s": epoch_s, "median_s": med, "samples_per_s": w.samples / med, "steps": steps,
        "step_ms": med / steps * 1e3, "allreduce_ms_per_step": statistics.median(reduce_per_step) * 1e3,
        "allreduce_share": statistics.median(reduce_per_step) / (med / steps),
        "allreduce_alone_ms": statistics.median(alone) * 1e3, "params": net.n_params,
        "grad_MB": net.n_params * 4 / 1e6, "warmup_s": warmup, "loss": losses[-1],
    }


def run(args: argparse.Namespace) -> int:
    """The --ranks mode of ``bp-gpu bench``: a table, and scaling.json under --out."""
    exe = mpiexec()
    if exe is None:
        raise RuntimeError("--ranks needs mpiexec: pip install 'bp_gpu[mpi]'")
    ranks = [int(r) for r in args.ranks.split(",")]
    if any(r < 1 or args.threads % r for r in ranks):
        raise ValueError(f"--ranks must divide --threads ({args.threads}); got {args.ranks}")
    workloads = args.workloads.split(",") if args.workloads else ["W2", "W3cpu"]
    if args.quick:
        workloads = ["quick"]
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad:
        raise ValueError(f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(WORKLOADS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for w in workloads:
        for R in ranks:
            cmd = [exe, "-n", str(R), sys.executable, "-m", "bp_gpu.bench.scaling", w, "--repeats", str(args.repeats)]
            proc = run_isolated(cmd, thread_env(args.threads // R), timeout=1800)
            last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
            if proc.returncode != 0 or not last:
                raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
            row = json.loads(last[0])
            rows.append(row)
            print(f"  {w} {R} x {args.threads // R} threads: {row['median_s']:.3f} s per epoch", flush=True)
    table = format_table(rows)
    print(table)
    (out / "scaling.json").write_text(json.dumps({"threads": args.threads, "rows": rows, "table": table}, indent=2))
    print(f"wrote {out / 'scaling.json'}")
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'workload':8s} {'processes x threads':>19s} {'epoch s (min-max)':>24s} {'samples/s':>10s} "
            f"{'speed-up':>8s} {'step ms':>8s} {'all-reduce ms/step':>18s} {'share':>6s} {'alone ms':>8s} "
            f"{'grad MB':>7s} {'loss':>9s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        one = next((q for q in rows if q["workload"] == r["workload"] and q["ranks"] == 1), None)
        speed = f"{one['median_s'] / r['median_s']:.2f}x" if one else "-"
        span = f"{r['median_s']:.4f} ({min(r['epoch_s']):.4f}-{max(r['epoch_s']):.4f})"
        lines.append(f"{r['workload']:8s} {r['ranks']:>9d} x {r['threads_per_rank']:<7d} {span:>24s} "
                     f"{r['samples_per_s']:>10,.0f} {speed:>8s} {r['step_ms']:>8.2f} "
                     f"{r['allreduce_ms_per_step']:>18.3f} {r['allreduce_share']:>6.1%} "
                     f"{r['allreduce_alone_ms']:>8.3f} {r['grad_MB']:>7.2f} {r['loss']:>9.6f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workload")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    res = measure(a.workload, a.repeats)
    if res is not None:
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
