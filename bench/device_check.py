"""One prepared check of the CUDA backend on a lent GPU (H100/H200): correctness, then speed.

Run it as ``bash bench/device_check.sh`` (installs the package offline, then runs this) or
``python3 bench/device_check.py`` when bp_gpu is already installed. Finishes in a few minutes:

1. the ``gpu``-marked tests (``tests/test_gpu.py``), in a subprocess;
2. ``backend="cuda"`` vs ``backend="cpu"`` on random problems (float64 and float32);
3. step hygiene: no host synchronization inside a training step (the step is enqueued behind a
   sleeping kernel measured at >= 40 ms and must return in under half of it), and device
   allocations per step;
4. each fused kernel timed with CuPy events (warm-up, median) at the benchmark shapes, as GB/s of
   the bytes it must move and as a fraction of the card's measured device-to-device copy bandwidth;
5. a full training step (forward + backward + SGD update, float32, mean loss) on
   W2 = [256, 1024, 1024, 1] batch 4096 and W3 = [128, 512, 512, 1] batch 65536: ours, the same
   engine with plain CuPy element-wise ops instead of our kernels, and PyTorch eager; device time
   per step and host time to enqueue one;
6. data-parallel training's GPU path (``bp_gpu.distributed``) on a one-process NCCL communicator:
   ``tests/test_gpu_distributed.py`` in a subprocess, then on W2 and W3 the NCCL all-reduce of the
   flat gradient (device time), the step with and without it, the MPI-on-pinned-copies fallback,
   and the step's hygiene with the all-reduce in it (no host sync, no allocation). Needs mpi4py
   (``pip install 'bp_gpu[mpi]'``) and CuPy's NCCL; without them the part fails saying so.

Prints one table; writes ``device_check.json`` under ``$OUT`` when that is set. Without a usable
device it says why, skips every GPU part and exits with status 2.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"W2": ([256, 1024, 1024, 1], 4096), "W3": ([128, 512, 512, 1], 65536)}
LR = 0.1
RESULTS: dict[str, Any] = {"sections": {}}


def log(msg: str) -> None:
    print(msg, flush=True)


def section(name: str, fn: Callable[[], Any]) -> Any:
    """Run one part; a failure is recorded and printed, and the other parts still run."""
    t0 = time.perf_counter()
    try:
        out = fn()
        RESULTS["sections"][name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 1)}
        return out
    except Exception as exc:  # report and go on: one broken part must not hide the others
        RESULTS["sections"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        log(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
        return None
    finally:
        _write_json(quiet=True)  # what is known so far survives a later crash of the process


# -- timing helpers -------------------------------------------------------------------------
def time_device(fn: Callable[[], None], reps: int = 20, inner: int = 5, warmup: int = 3) -> float:
    """Median device time of fn in microseconds: CuPy events around ``inner`` calls, ``reps`` times."""
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    times = []
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    for _ in range(reps):
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) * 1e3 / inner)
    return statistics.median(times)


def time_host(fn: Callable[[], None], reps: int = 50) -> float:
    """Median host time in microseconds to enqueue one call (the device may still be busy)."""
    import cupy

    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
        cupy.cuda.get_current_stream().synchronize()
    return statistics.median(times)


# -- parts ------------------------------------------------------------------------------------
def run_gpu_tests(timeout_s: float = 180, module: str = "test_gpu.py") -> dict:
    # -P: no checkout directory on sys.path, so bp_gpu is the installed one (with bp_gpu.kernels),
    # not the bare bp_gpu/ folder of the checkout (device_check.sh may install it as a symlink tree).
    py = [sys.executable] + (["-P"] if sys.version_info >= (3, 11) else [])
    cmd = py + ["-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests" / module)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:  # keep what it printed: which test hung
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                      for x in (exc.stdout, exc.stderr))
        rc = f"timeout after {timeout_s:.0f} s"
    tail = out.strip().splitlines()[-15:]
    log("\n".join(tail))
    if rc != 0:
        raise RuntimeError(f"gpu tests failed (exit {rc}): {tail[-1] if tail else ''}")
    if not tail or " passed" not in tail[-1] or "skipped" in tail[-1]:
        # The device is usable here, so a skip means the subprocess saw no device: not a pass.
        raise RuntimeError(f"gpu tests did not all run: {tail[-1] if tail else 'no output'}")
    return {"summary": tail[-1] if tail else ""}


def cuda_vs_cpu() -> list[dict]:
    import cupy

    from bp_gpu import MLP

    rng = np.random.default_rng(1)
    rows = RESULTS["cuda_vs_cpu"] = []  # filled as it goes: a failure keeps the rows before it
    bad = []
    for sizes, n, dtype in [([30, 200, 1], 5000, "float64"), ([64, 257, 129, 3], 20001, "float64"),
                            ([256, 1024, 1024, 1], 4096, "float32")]:
        for pc in (0, 1):
            kw = dict(dtype=dtype, positive_class=pc, seed=int(rng.integers(1 << 30)))
            gpu, cpu = MLP(sizes, backend="cuda", **kw), MLP(sizes, backend="cpu", **kw)
            X = rng.standard_normal((n, sizes[0]))
            t = (rng.random((n, sizes[-1])) < 0.5).astype(float)
            l1, g1 = gpu.loss_and_grad(cupy.asarray(X), cupy.asarray(t))
            l0, g0 = cpu.loss_and_grad(X, t)
            err = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))
                      for p, q in zip(g1, g0) for a, b in zip(p, q))
            row = {"sizes": sizes, "batch": n, "dtype": dtype, "positive_class": pc,
                   "loss_rel_err": abs(l1 - l0) / abs(l0), "grad_max_rel_err": err}
            rows.append(row)
            log(f"  cuda vs cpu {sizes} n={n} {dtype} pc={pc}: loss rel err {row['loss_rel_err']:.1e}, "
                f"grad max rel err {err:.1e}")
            limit = 1e-9 if dtype == "float64" else 1e-3
            if row["loss_rel_err"] > limit or err > limit:
                bad.append(f"{sizes} {dtype} pc={pc}")
    if bad:
        raise AssertionError(f"cuda and cpu disagree beyond tolerance (1e-9 float64, 1e-3 float32) on {bad}")
    return rows


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), 512 MiB buffers."""
    import cupy

    n = 512 * 2**20 // 4
    src, dst = cupy.ones(n, dtype=cupy.float32), cupy.empty(n, dtype=cupy.float32)
    us = time_device(lambda: cupy.copyto(dst, src), reps=10, inner=3)
    gbs = 2 * n * 4 / (us * 1e-6) / 1e9
    log(f"  device copy bandwidth: {gbs:.0f} GB/s (512 MiB, read + write)")
    return gbs


def kernel_timings(copy_gbs: float) -> list[dict]:
    import cupy

    from bp_gpu.cuda_host import CUDA_STEPS as K

    rows = []
    for arch, (sizes, B) in ARCHS.items():
        O = sizes[1]
        A = cupy.random.standard_normal((B, O), dtype=cupy.float32)
        b = cupy.zeros(O, dtype=cupy.float32)
        Z = cupy.random.random((B, O), dtype=cupy.float32)
        db = cupy.empty(O, dtype=cupy.float32)
        Aout = cupy.random.standard_normal((B, 1), dtype=cupy.float32)
        T = (cupy.random.random((B, 1)) < 0.5).astype(cupy.float32)
        bo, dbo = cupy.zeros(1, cupy.float32), cupy.empty(1, cupy.float32)
        D, loss = cupy.empty((B, 1), cupy.float32), cupy.empty(1, cupy.float64)
        n_params = sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:]))
        p, g = cupy.zeros(n_params, cupy.float32), cupy.ones(n_params, cupy.float32)
        m, v = cupy.zeros(n_params, cupy.float32), cupy.zeros(n_params, cupy.float32)
        s = 4  # bytes per float32
        cases = [
            ("bias_sigmoid_forward", f"({B}, {O})", lambda: K.bias_sigmoid_forward(A, b), 2 * B * O * s),
            ("sigmoid_delta_backward", f"({B}, {O})", lambda: K.sigmoid_delta_backward(A, Z, db), 3 * B * O * s),
            ("output_loss_delta", f"({B}, 1)", lambda: K.output_loss_delta(Aout, bo, T, 1, 1.0 / B, D, dbo, loss),
             3 * B * s),
            ("optimizer_update sgd", f"P={n_params}",
             lambda: K.optimizer_update(0, p, g, None, None, n_params - 2 * O - 1, 1e-9, 0, 0, .9, .999, 1e-8, 1, 1),
             3 * n_params * s),
            ("optimizer_update adam", f"P={n_params}",
             lambda: K.optimizer_update(2, p, g, m, v, n_params - 2 * O - 1, 1e-9, 0, 0, .9, .999, 1e-8, .1, .001),
             7 * n_params * s),
        ]
        for name, shape, fn, nbytes in cases:
            try:  # one failing launcher must not hide the others' numbers
                us = time_device(fn)
                gbs = nbytes / (us * 1e-6) / 1e9
                rows.append({"kernel": name, "arch": arch, "shape": shape, "us": us, "GB/s": gbs,
                             "frac_copy_bw": gbs / copy_gbs, "host_us": time_host(fn)})
            except Exception as exc:
                rows.append({"kernel": name, "arch": arch, "shape": shape, "error": f"{type(exc).__name__}: {exc}"})
                log(f"  {name} {arch}: {type(exc).__name__}: {exc}")
    if rows and all("error" in r for r in rows):
        raise RuntimeError(f"every kernel timing failed; first: {rows[0]['error']}")
    return rows


def _malloc_counter() -> Any:
    """A CuPy memory hook (use it as a context manager) counting allocation requests in ``.n``."""
    from cupy.cuda import memory_hook

    class CountMallocs(memory_hook.MemoryHook):
        name = "count_mallocs"

        def __init__(self):
            self.n = 0

        def malloc_preprocess(self, **kwargs):
            self.n += 1

    return CountMallocs()


def _our_step(sizes: list[int], B: int, steps_module: Any = None):
    """(engine, step fn) of our backend, or of the same engine with ``steps_module``."""
    import cupy

    from bp_gpu import MLP
    from bp_gpu.engine import Engine
    from bp_gpu.mlp import glorot_weights

    rng = np.random.default_rng(0)
    X = cupy.asarray(rng.standard_normal((B, sizes[0])), dtype=cupy.float32)
    T = cupy.asarray(rng.random((B, sizes[-1])) < 0.5, dtype=cupy.float32)
    if steps_module is None:
        engine = MLP(sizes, backend="cuda", dtype="float32", seed=0)._engine
    else:
        engine = Engine(cupy, steps_module, tuple(sizes), np.dtype(np.float32), "cupy-plain")
        for (W, b), (W0, b0) in zip(engine.layers, glorot_weights(sizes, 0, np.float32)):
            W[...] = cupy.asarray(W0)
            b[...] = cupy.asarray(b0)
    steps = engine.steps

    def step():
        engine.loss_and_grad(X, T, 1, 1.0 / B)
        steps.optimizer_update(0, engine.params, engine.grads, None, None, engine.n_weights,
                               LR, 0.0, 0.0, 0.9, 0.999, 1e-8, 1.0, 1.0)

    return engine, step


def _time_step(step: Callable[[], None]) -> tuple[float, float]:
    """(device us, host enqueue us) per step."""
    return time_device(step), time_host(step, reps=20)


def _torch_step(sizes: list[int], B: int):
    import torch

    torch.manual_seed(0)
    layers = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(i, o), torch.nn.Sigmoid()]
    net = torch.nn.Sequential(*layers[:-1]).cuda()  # the output sigmoid lives in the loss
    X = torch.randn(B, sizes[0], device="cuda")
    T = (torch.rand(B, sizes[-1], device="cuda") < 0.5).float()
    opt = torch.optim.SGD(net.parameters(), lr=LR, foreach=True)
    lossf = torch.nn.BCEWithLogitsLoss(reduction="sum")

    def step():
        opt.zero_grad(set_to_none=False)
        loss = lossf(net(X), T) / B
        loss.backward()
        opt.step()

    return step


def _time_torch(step: Callable[[], None], reps: int = 20, inner: int = 5) -> tuple[float, float]:
    import torch

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times, host = [], []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(inner):
            t0 = time.perf_counter()
            step()
            host.append((time.perf_counter() - t0) * 1e6)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3 / inner)
    return statistics.median(times), statistics.median(host)


def _enqueue_behind_sleep(step: Callable[[], None]) -> tuple[float, float]:
    """(sleeping kernel ms, ms to enqueue ``step`` behind it on the same stream): a step that waits
    for the device takes about as long as the kernel."""
    import cupy
    from bp_gpu.kernels import _launch
    from numba import cuda

    @cuda.jit
    def sleep_kernel(n):
        for _ in range(n):
            cuda.nanosleep(1000)

    stream = cupy.cuda.get_current_stream()
    sleep_kernel[1, 1, _launch.stream()](1)
    stream.synchronize()
    # nanosleep(t) sleeps anywhere in [0, 2t]: measure the sleeping kernel and grow it to >= 40 ms.
    n, sleep_ms = 50_000, 0.0
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    for _ in range(12):
        start.record(stream)
        sleep_kernel[1, 1, _launch.stream()](n)
        end.record(stream)
        end.synchronize()
        sleep_ms = cupy.cuda.get_elapsed_time(start, end)
        if sleep_ms >= 40.0:
            break
        n *= 2 if sleep_ms > 20.0 else 8
    sleep_kernel[1, 1, _launch.stream()](n)
    t0 = time.perf_counter()
    step()
    enqueue_ms = (time.perf_counter() - t0) * 1e3
    stream.synchronize()
    return sleep_ms, enqueue_ms


def step_hygiene() -> dict:
    """No host sync in a step (it returns while a sleeping kernel of >= 40 ms, measured, still runs
    ahead of it on the same stream), and no device allocation per step once warm."""
    import cupy

    _, step = _our_step([256, 1024, 1024, 1], 4096)
    step()
    sleep_ms, enqueue_ms = _enqueue_behind_sleep(step)
    hook = _malloc_counter()
    with hook:
        for _ in range(5):
            step()
    cupy.cuda.get_current_stream().synchronize()
    out = {"sleep_kernel_ms": sleep_ms, "enqueue_ms_behind_sleep_kernel": enqueue_ms,
           "no_host_sync": enqueue_ms < 0.5 * sleep_ms, "device_allocs_per_step": hook.n / 5}
    log(f"  step enqueue behind a {sleep_ms:.0f} ms kernel: {enqueue_ms:.2f} ms -> "
        f"{'no host sync' if out['no_host_sync'] else 'HOST SYNC INSIDE THE STEP'}; "
        f"device allocations per step: {out['device_allocs_per_step']:.1f}")
    return out


def training_steps() -> list[dict]:
    from bp_gpu import steps_numpy

    rows = []
    for arch, (sizes, B) in ARCHS.items():
        flops = 6 * B * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))  # fwd 2, bwd 4 per MAC
        impls: list[tuple[str, Callable[[], tuple[float, float]]]] = [
            ("bp_gpu cuda", lambda: _time_step(_our_step(sizes, B)[1])),
            ("plain CuPy (no fused kernels)", lambda: _time_step(_our_step(sizes, B, steps_numpy)[1])),
            ("PyTorch eager", lambda: _time_torch(_torch_step(sizes, B))),
        ]
        for name, run in impls:
            try:
                us, host_us = run()
                rows.append({"impl": name, "arch": arch, "batch": B, "us_per_step": us, "host_us_per_step": host_us,
                             "TFLOP/s": flops / (us * 1e-6) / 1e12})
            except Exception as exc:
                rows.append({"impl": name, "arch": arch, "batch": B, "error": f"{type(exc).__name__}: {exc}"})
                log(f"  {name} {arch}: {type(exc).__name__}: {exc}")
    # Host overhead of a step that does almost no device work: what the launches cost the CPU.
    try:
        _, tiny = _our_step([8, 16, 16, 1], 64)
        rows.append({"impl": "bp_gpu cuda", "arch": "tiny [8,16,16,1]", "batch": 64,
                     "us_per_step": time_device(tiny), "host_us_per_step": time_host(tiny)})
    except Exception as exc:
        rows.append({"impl": "bp_gpu cuda", "arch": "tiny", "error": f"{type(exc).__name__}: {exc}"})
    return rows


def data_parallel() -> dict:
    """bp_gpu.distributed's GPU path on one GPU (a one-rank NCCL communicator; two ranks cannot share
    a GPU): its gpu tests, then per architecture the all-reduce and the step around it."""
    import importlib.util

    import cupy

    if importlib.util.find_spec("mpi4py") is None:
        raise RuntimeError("mpi4py is not importable (pip install 'bp_gpu[mpi]'): the NCCL path was not exercised")
    from cupy.cuda import nccl
    from mpi4py import MPI

    from bp_gpu import MLP
    from bp_gpu import distributed as D
    from bp_gpu.optim import SGD

    out: dict[str, Any] = {"nccl_available": bool(nccl.available)}
    if not nccl.available:
        raise RuntimeError("CuPy has no NCCL here (install the nvidia-nccl wheel for this CUDA): the NCCL path "
                           "was not exercised")
    out["nccl_version"] = nccl.get_version()
    out["tests"] = run_gpu_tests(module="test_gpu_distributed.py")["summary"]
    group = D.ProcessGroup(MPI.COMM_SELF)
    rows = out["steps"] = []
    rng = np.random.default_rng(0)
    for arch, (sizes, B) in ARCHS.items():
        net = MLP(sizes, backend="cuda", dtype="float32", seed=0)
        opt = SGD(net, 1e-6)
        X = cupy.asarray(rng.standard_normal((B, sizes[0])), cupy.float32)
        T = cupy.asarray(rng.random((B, sizes[-1])) < 0.5, cupy.float32)
        nccl_reduce = D.make_reducer(group, net._engine, "nccl")
        staged = D.make_reducer(group, net._engine, "mpi-staged")
        row: dict[str, Any] = {"arch": arch, "batch": B, "params": net.n_params,
                               "grad_MB": net.n_params * 4 / 1e6}
        for name, fn in [("allreduce_nccl_us", nccl_reduce), ("allreduce_staged_us", staged),
                         ("step_us", lambda: net._step(X, T, opt, 1 / B)),
                         ("step_nccl_us", lambda: net._step(X, T, opt, 1 / B, reduce_grads=nccl_reduce))]:
            row[name] = time_device(fn)
        row["host_enqueue_step_nccl_us"] = time_host(lambda: net._step(X, T, opt, 1 / B, reduce_grads=nccl_reduce))
        hook = _malloc_counter()
        with hook:
            for _ in range(5):
                net._step(X, T, opt, 1 / B, reduce_grads=nccl_reduce)
        nccl_reduce.finish()
        row["device_allocs_per_step_nccl"] = hook.n / 5
        rows.append(row)
        log(f"  {arch}: P={net.n_params:,} ({row['grad_MB']:.1f} MB): NCCL all-reduce "
            f"{row['allreduce_nccl_us']:.1f} us (1 rank), staged MPI {row['allreduce_staged_us']:.1f} us; "
            f"step {row['step_us']:.1f} us, with NCCL {row['step_nccl_us']:.1f} us, enqueue "
            f"{row['host_enqueue_step_nccl_us']:.1f} us, {row['device_allocs_per_step_nccl']:.1f} allocations per step")
    # The same no-host-sync test as step_hygiene, with the all-reduce inside the step.
    sizes, B = ARCHS["W2"]
    net = MLP(sizes, backend="cuda", dtype="float32", seed=0)
    opt = SGD(net, 1e-6)
    reduce = D.make_reducer(group, net._engine, "nccl")
    X = cupy.asarray(rng.standard_normal((B, sizes[0])), cupy.float32)
    T = cupy.zeros((B, 1), cupy.float32)
    net._step(X, T, opt, 1 / B, reduce_grads=reduce)
    sleep_ms, enqueue_ms = _enqueue_behind_sleep(lambda: net._step(X, T, opt, 1 / B, reduce_grads=reduce))
    reduce.finish()
    hy = out["hygiene"] = {"sleep_kernel_ms": sleep_ms, "enqueue_ms": enqueue_ms,
                           "no_host_sync": enqueue_ms < 0.5 * sleep_ms}
    log(f"  step with the NCCL all-reduce enqueued behind a {sleep_ms:.0f} ms kernel in {enqueue_ms:.2f} ms -> "
        f"{'no host sync' if hy['no_host_sync'] else 'HOST SYNC INSIDE THE STEP'}")
    bad = [r["arch"] for r in rows if r["device_allocs_per_step_nccl"] > 0]
    if bad or not out["hygiene"]["no_host_sync"]:
        raise AssertionError(f"data-parallel step hygiene: allocations per step on {bad}, "
                             f"no host sync: {out['hygiene']['no_host_sync']}")
    return out


def print_table(copy_gbs: float | None, kernels: list[dict] | None, steps: list[dict] | None) -> None:
    log("\n=== bp_gpu device check: " + RESULTS.get("device", "?") + " ===")
    if RESULTS.get("gpu_tests"):
        log(f"gpu tests: {RESULTS['gpu_tests']['summary']}")
    for dtype in ("float64", "float32"):
        rows = [r for r in RESULTS.get("cuda_vs_cpu") or [] if r["dtype"] == dtype]
        if rows:
            log(f"cuda vs cpu, {dtype}: max loss rel err {max(r['loss_rel_err'] for r in rows):.1e}, "
                f"max grad rel err {max(r['grad_max_rel_err'] for r in rows):.1e} ({len(rows)} problems)")
    hy = RESULTS.get("hygiene")
    if hy:
        log(f"step hygiene: enqueue {hy['enqueue_ms_behind_sleep_kernel']:.2f} ms behind a "
            f"{hy['sleep_kernel_ms']:.0f} ms kernel ({'no host sync' if hy['no_host_sync'] else 'HOST SYNC'}), "
            f"{hy['device_allocs_per_step']:.1f} device allocations per step")
    if copy_gbs:
        log(f"device-to-device copy bandwidth: {copy_gbs:.0f} GB/s")
    if kernels:
        log(f"\n{'kernel':<24}{'arch':<5}{'shape':<16}{'us':>9}{'GB/s':>9}{'of copy':>9}{'host us':>9}")
        for r in kernels:
            if "error" in r:
                log(f"{r['kernel']:<24}{r['arch']:<5}{r['shape']:<16}  error: {r['error']}")
                continue
            log(f"{r['kernel']:<24}{r['arch']:<5}{r['shape']:<16}{r['us']:>9.1f}{r['GB/s']:>9.0f}"
                f"{r['frac_copy_bw']:>9.0%}{r['host_us']:>9.1f}")
    if steps:
        torch_us = {r["arch"]: r["us_per_step"] for r in steps if r["impl"] == "PyTorch eager" and "us_per_step" in r}
        log(f"\n{'training step (fwd+bwd+SGD, f32)':<34}{'arch':<18}{'batch':>7}{'us/step':>10}{'host us':>9}"
            f"{'TFLOP/s':>9}{'vs torch':>9}")
        for r in steps:
            if "error" in r:
                log(f"{r['impl']:<34}{r['arch']:<18}{r.get('batch', ''):>7}  error: {r['error']}")
                continue
            ref = torch_us.get(r["arch"])
            speed = f"{ref / r['us_per_step']:.2f}x" if ref else "-"
            tf = f"{r['TFLOP/s']:.1f}" if "TFLOP/s" in r else "-"
            log(f"{r['impl']:<34}{r['arch']:<18}{r['batch']:>7}{r['us_per_step']:>10.1f}"
                f"{r['host_us_per_step']:>9.1f}{tf:>9}{speed:>9}")
    dp = RESULTS.get("data_parallel")
    if dp:
        log(f"\ndata-parallel (NCCL {dp.get('nccl_version')}, one rank): tests {dp.get('tests')}")
        for r in dp.get("steps", []):
            log(f"  {r['arch']}: all-reduce {r['allreduce_nccl_us']:.1f} us NCCL / {r['allreduce_staged_us']:.1f} us "
                f"staged MPI; step {r['step_us']:.1f} -> {r['step_nccl_us']:.1f} us with NCCL")
    log("\nsections: " + ", ".join(f"{k} {'ok' if v['ok'] else 'FAILED'}" for k, v in RESULTS["sections"].items()))


def main() -> int:
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    from bp_gpu.backends import cuda_status

    RESULTS["python"] = platform.python_version()
    ok, why = cuda_status()
    RESULTS["device"] = why
    log(f"bp_gpu device check: {why}")
    if not ok:
        log("No usable CUDA device: every GPU part is skipped (nothing was measured).")
        RESULTS["skipped"] = why
        _write_json()
        return 2
    import cupy

    RESULTS["cupy"] = cupy.__version__
    t_start = time.perf_counter()
    RESULTS["gpu_tests"] = section("gpu tests", run_gpu_tests)
    section("cuda vs cpu", cuda_vs_cpu)  # keeps its rows in RESULTS even when it fails
    RESULTS["hygiene"] = section("step hygiene", step_hygiene)
    copy_gbs = section("copy bandwidth", copy_bandwidth)
    RESULTS["copy_GB/s"] = copy_gbs
    kernels = section("kernel timings", lambda: kernel_timings(copy_gbs)) if copy_gbs else None
    RESULTS["kernels"] = kernels
    steps = section("training steps", training_steps)
    RESULTS["training_steps"] = steps
    RESULTS["data_parallel"] = section("data-parallel NCCL", data_parallel)
    RESULTS["seconds"] = round(time.perf_counter() - t_start, 1)
    print_table(copy_gbs, kernels, steps)
    _write_json()
    return 0 if all(v["ok"] for v in RESULTS["sections"].values()) else 1


def _write_json(quiet: bool = False) -> None:
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / "device_check.json"
        path.write_text(json.dumps(RESULTS, indent=2, default=str))
        if not quiet:
            log(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
