"""One measurement in a fresh process: build a peer, warm it up, time one epoch.

``python -m bp_gpu.bench.worker PEER WORKLOAD [--threads N]`` prints one JSON object on its last
stdout line. A fresh process per measurement keeps each tool's thread pools (OpenBLAS, OpenMP,
Numba, MKL) from meeting another's. Peak memory of the epoch: the kernel's high-water mark (VmHWM)
is reset just before the timed epoch (``/proc/self/clear_refs``), so the peak is the epoch's own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (``VmHWM``, ``VmRSS``), or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def thread_env(n: int) -> dict[str, str]:
    """The environment of a worker whose every thread pool has n threads. It must be set before
    the process starts: importing bp_gpu imports NumPy, which starts OpenBLAS's pool."""
    return {**os.environ, **{var: str(n) for var in THREAD_VARS}}


def run_isolated(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a worker (``python -m bp_gpu.bench...``) from an empty temporary directory, its output
    captured. ``python -m`` puts the working directory first on ``sys.path``, so a ``bp_gpu/``
    folder there (the parent of a clone named bp_gpu) would be imported instead of the installed
    package, and every bp_gpu peer would fail. Paths in ``cmd`` must be absolute."""
    with tempfile.TemporaryDirectory(prefix="bp_gpu_bench_") as cwd:
        return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def blas_info() -> str:
    """The BLAS NumPy calls and the kernel it runs (OPENBLAS_CORETYPE changes it)."""
    try:
        from threadpoolctl import threadpool_info

        libs = [f"{i['internal_api']} {i.get('version') or ''} {i.get('architecture') or ''}".strip()
                + f" x{i['num_threads']}" for i in threadpool_info() if i["user_api"] == "blas"]
        return "; ".join(libs) or "unknown"
    except ImportError:
        return "unknown (threadpoolctl not installed)"


def measure(peer_name: str, workload: str, threads: int) -> dict:
    import numpy as np

    from .peers import PEERS
    from .workloads import WORKLOADS, initial_weights, make_data

    cls, w = PEERS[peer_name], WORKLOADS[workload]
    out = {"peer": peer_name, "workload": workload, "device": cls.device, "threads": threads}
    why = cls.unavailable()
    if why:
        return {**out, "ok": False, "skipped": why}
    if cls.name.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
    X, T = make_data(w)
    t0 = time.perf_counter()
    peer = cls(w, X, T, initial_weights(w))
    out["build_s"] = time.perf_counter() - t0
    out["warmup_s"] = peer.warmup()  # JIT / torch.compile / cache loads happen here
    peer.reset()
    rss0 = status_kb("VmRSS")
    tracked = _reset_peak()
    t0 = time.perf_counter()
    loss = peer.epoch()
    out["epoch_s"] = time.perf_counter() - t0
    hwm = status_kb("VmHWM")
    out["loss"] = loss
    out["peak_rss_mb"] = None if hwm is None else hwm / 1024
    out["epoch_extra_mb"] = (hwm - rss0) / 1024 if tracked and hwm and rss0 else None
    if hasattr(peer, "memory_needed"):
        out["needed_mb"] = peer.memory_needed() / 2**20
    out["blas"] = blas_info()
    out["ok"] = bool(np.isfinite(loss))
    if not out["ok"]:
        out["error"] = f"epoch loss is {loss}"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("peer")
    p.add_argument("workload")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="(start it with thread_env)")
    a = p.parse_args(argv)
    try:
        res = measure(a.peer, a.workload, a.threads)
    except Exception as exc:  # one failing peer must not stop the others: report it as a result
        res = {"peer": a.peer, "workload": a.workload, "ok": False,
               "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
