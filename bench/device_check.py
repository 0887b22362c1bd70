"""One prepared check of the CUDA backend on a lent GPU (H100/H200): correctness, then speed.

Run it as ``bash bench/device_check.sh`` (installs the package offline, then runs this) or
``python3 bench/device_check.py`` when bp_gpu is already installed. Finishes in a few minutes:

1. the ``gpu``-marked tests (``tests/test_gpu.py``), in a subprocess;
2. the launch path: prepared launches are one ``cuLaunchKernel`` each, not Numba's dispatcher
   (the fallback's warning is reported if it happened), and each kernel's resident blocks per SM
   from our occupancy table against the driver's occupancy query;
3. ``backend="cuda"`` vs ``backend="cpu"`` on random problems (float64 and float32);
4. ``PreparedGemm`` (``cublasGemmEx`` through ctypes) against ``cupy.matmul``: equal bit for bit,
   or how far apart;
5. step hygiene: nothing waits on the device and nothing allocates per step, for ``MLP.train_step``
   on CuPy inputs, a compiled step, and the classifier's epoch loop (``bp_gpu.train.run_epoch``)
   over device-resident data (gathers on the device) and streamed data (pinned staging, copies on
   the copy stream): each runs behind a sleeping kernel and must be enqueued before it ends (the
   streamed loop may run only its double buffer ahead), with CuPy's allocations counted;
6. each fused kernel's device time with CuPy events, its launches queued behind a sleeping kernel so
   the device runs them back to back (the host's launch rate never shows), at the shapes of W1, W2
   and W3, as GB/s of the bytes it must move and as a fraction of the card's measured copy bandwidth;
7. the compiled step (a CUDA graph) against eager ``train_step``, bit for bit, for every optimizer
   with a schedule;
8. host and device microseconds per step, eager ``train_step`` vs the replayed compiled step, on W1
   and W2 (host time measured while the device is held by a sleeping kernel);
9. the host-path benchmark's estimate for W1 (``bench/host_path.py``, in the simulator), to set
   beside what 8 measured;
10. whole epochs per step: ``train_step`` in a loop, the classifier's loop, the compiled step and
    PyTorch eager (``bp_gpu.bench.peers``) on W1, W2 and W3;
11. data-parallel training's GPU path (``bp_gpu.distributed``) on a one-process NCCL communicator:
    ``tests/test_gpu_distributed.py`` in a subprocess, then on W2 and W3 the NCCL all-reduce of the
    flat gradient (device time), the step with and without it, the MPI-on-pinned-copies fallback,
    and the step's hygiene with the all-reduce in it (no host sync, no allocation). Needs mpi4py
    (``pip install 'bp_gpu[mpi]'``) and CuPy's NCCL; without them the part fails saying so.

Prints one table; writes ``device_check.json`` under ``$OUT`` when that is set. Without a usable
device it says why, skips every GPU part and exits with status 2.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
W1 = ([28, 64, 64, 1], 1024)
ARCHS = {"W1": W1, "W2": ([256, 1024, 1024, 1], 4096), "W3": ([128, 512, 512, 1], 65536)}
HOST_ARCHS = ("W1", "W2")  # host and device time per step, eager vs replayed
TRAINING_WORKLOADS = ("W1", "W2", "W3")  # of bp_gpu.bench.workloads, for whole epochs
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
        RESULTS["sections"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                     "seconds": round(time.perf_counter() - t0, 1)}
        log(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
        return None
    finally:
        _write_json(quiet=True)  # what is known so far survives a later crash of the process


# -- holding the device: a sleeping kernel ------------------------------------------------------
def sleep_iterations(ms: float, ms_per_iteration: float, margin: float = 1.25) -> int:
    """Iterations of the sleeping kernel for at least ``ms`` (``nanosleep`` sleeps anywhere in
    [0, 2t] per the PTX ISA, so it is calibrated, and padded by ``margin``)."""
    return max(1, math.ceil(ms / ms_per_iteration * margin))


class Sleeper:
    """A one-thread kernel that sleeps on CuPy's current stream: work enqueued behind it starts
    only when it ends, so the host can enqueue (and be timed enqueuing) while the device waits."""

    def __init__(self) -> None:
        from numba import cuda

        @cuda.jit
        def sleep_kernel(n):
            for _ in range(n):
                cuda.nanosleep(1000)

        self.kernel = sleep_kernel
        self.ms_per_iteration = self._calibrate()

    def launch(self, n: int) -> None:
        from bp_gpu.kernels import _launch
        from numba.cuda.core.errors import NumbaPerformanceWarning

        with warnings.catch_warnings():  # one thread on purpose: no low-occupancy warning
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            configured = self.kernel[1, 1, _launch.stream()]
        configured(n)

    def _calibrate(self) -> float:
        import cupy

        self.launch(1)  # compile and load
        n, ms = 2000, 0.0
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        for _ in range(8):
            start.record()
            self.launch(n)
            end.record()
            end.synchronize()
            ms = cupy.cuda.get_elapsed_time(start, end)
            if ms >= 5.0:
                break
            n *= 4
        return max(ms, 1e-3) / n

    def sleep(self, ms: float) -> None:
        self.launch(sleep_iterations(ms, self.ms_per_iteration))


_SLEEPER: Sleeper | None = None


def sleeper() -> Sleeper:
    global _SLEEPER
    if _SLEEPER is None:
        _SLEEPER = Sleeper()
    return _SLEEPER


def behind_sleep(fn: Callable[[], None], calls: int, sleep_ms: float) -> dict[str, float]:
    """``calls`` calls of fn enqueued behind a sleeping kernel of ``sleep_ms``: the device time of
    the calls run back to back (events recorded after the sleep and after the calls), the host time
    to enqueue them, the sleep's own measured length, and ``queued``: the host finished enqueuing
    before the sleep ended (else the device time includes launch gaps)."""
    import cupy

    s = sleeper()  # built (and calibrated) before anything is recorded
    stream = cupy.cuda.get_current_stream()
    before, start, end = cupy.cuda.Event(), cupy.cuda.Event(), cupy.cuda.Event()
    before.record(stream)
    s.sleep(sleep_ms)
    start.record(stream)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    end.record(stream)
    host_ms = (time.perf_counter() - t0) * 1e3
    end.synchronize()
    slept = cupy.cuda.get_elapsed_time(before, start)
    return {"device_ms": cupy.cuda.get_elapsed_time(start, end), "host_ms": host_ms, "sleep_ms": slept,
            "queued": host_ms < slept}


# -- timing helpers -------------------------------------------------------------------------
def time_device(fn: Callable[[], None], reps: int = 15, inner: int = 10, warmup: int = 3) -> dict[str, Any]:
    """Median device time of one call of fn in microseconds (``us``), its launches queued behind a
    sleeping kernel so the device runs them back to back; ``host_us``: median host time to enqueue
    one call; ``queued``: every repetition was enqueued before its sleep ended."""
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    enqueue_ms = (time.perf_counter() - t0) * 1e3
    cupy.cuda.get_current_stream().synchronize()
    sleep_ms = max(0.5, 3 * enqueue_ms)
    runs = [behind_sleep(fn, inner, sleep_ms) for _ in range(reps)]
    return {"us": statistics.median(r["device_ms"] for r in runs) * 1e3 / inner,
            "host_us": statistics.median(r["host_ms"] for r in runs) * 1e3 / inner,
            "queued": all(r["queued"] for r in runs)}


# -- parts ------------------------------------------------------------------------------------
def run_gpu_tests(timeout_s: float = 240, module: str = "test_gpu.py") -> dict:
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


def launch_path() -> dict:
    """Whether prepared launches are packed ``cuLaunchKernel`` calls (or fell back to Numba's
    dispatcher, with its warning), and each kernel's blocks per SM: our table vs the driver."""
    import cupy
    from bp_gpu.kernels import _launch, _occupancy
    from bp_gpu.kernels.bias_sigmoid_forward import prepare_bias_sigmoid_forward
    from numba import cuda
    from numba.cuda.cudadrv.devices import get_context

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        A, b = cupy.zeros((1024, 64), cupy.float32), cupy.zeros(64, cupy.float32)
        launch = prepare_bias_sigmoid_forward(A, b)
        launch()
        cupy.cuda.get_current_stream().synchronize()
    fallback = [str(w.message) for w in caught if "pre-packed kernel launches are unavailable" in str(w.message)]
    # A packed launch keeps (parameter buffer, arrays); the dispatcher fallback a list of arrays.
    packed = isinstance(getattr(launch, "keep_alive", None), tuple) and not _launch._warned_fallback
    warning = fallback[0] if fallback else (
        "fell back earlier in this process (its warning is printed above)" if _launch._warned_fallback else None)
    out = RESULTS["launch_path"] = {"packed": packed, "fallback_warning": warning}
    log(f"  prepared launches: {'one cuLaunchKernel each' if packed else 'Numba dispatcher (fallback)'}"
        + (f"; warning: {warning}" if warning else ""))
    cc = tuple(cuda.get_current_device().compute_capability)
    rows = []
    for name, dtype, kernel in _compiled_kernels():
        regs, smem = kernel.regs_per_thread, kernel.shared_mem_per_block
        ours = _occupancy.blocks_per_sm(cc, regs, _launch.DEVICE_THREADS, smem) if cc in _occupancy.TARGETS else None
        driver = get_context().get_active_blocks_per_multiprocessor(kernel._codelibrary.get_cufunc(),
                                                                   _launch.DEVICE_THREADS, 0)
        rows.append({"kernel": name, "dtype": dtype, "registers": regs, "ours": ours, "driver": int(driver)})
    out["occupancy"] = rows
    mismatched = [r for r in rows if r["ours"] is not None and r["ours"] != r["driver"]]
    for r in rows:
        log(f"  {r['kernel']:<38}{r['dtype']:<9}{r['registers']:>4} registers: {r['ours']} blocks/SM (our table), "
            f"{r['driver']} (driver)")
    if not out["packed"]:
        raise RuntimeError(f"prepared launches fell back to Numba's dispatcher: {out['fallback_warning']}")
    if mismatched:
        raise AssertionError(f"occupancy table disagrees with the driver for {[r['kernel'] for r in mismatched]}")
    return out


def _compiled_kernels() -> list[tuple[str, str, Any]]:
    """(name, dtype, compiled ``_Kernel``) of every kernel of bp_gpu.kernels, for float32 and
    float64, with the signatures the launches use (from the disk cache when it has them)."""
    import importlib

    from bp_gpu.kernel_report import KERNEL_MODULES

    kernels = []
    for mod in KERNEL_MODULES:
        module = importlib.import_module(f"bp_gpu.kernels.{mod}")
        for dtype in ("float32", "float64"):
            for name, _, sig in module.signatures(np.dtype(dtype)):
                kernels.append((name, dtype, getattr(module, name).compile(tuple(sig))))
    return kernels


def prepared_gemm_vs_cupy() -> list[dict]:
    """The engine's three GEMMs through ``PreparedGemm`` and through ``cupy.matmul``: bit for bit
    equal, or the largest difference relative to the largest magnitude (both are cuBLAS; the
    workspaces differ, so equality is reported, not required)."""
    import cupy

    from bp_gpu.cublas_gemm import PreparedGemm

    rng = np.random.default_rng(3)
    rows = RESULTS["prepared_gemm"] = []
    for dtype in (np.float32, np.float64):
        for B, K, O in [(1024, 28, 64), (1024, 64, 64), (4096, 256, 1024), (65536, 128, 512), (257, 129, 10)]:
            X = cupy.asarray(rng.standard_normal((B, K)), dtype)
            W = cupy.asarray(rng.standard_normal((O, K)), dtype)
            D = cupy.asarray(rng.standard_normal((B, O)), dtype)
            for name, (a, b) in {"X W^T": (X, W.T), "D^T X": (D.T, X), "D W": (D, W)}.items():
                out = cupy.empty((a.shape[0], b.shape[1]), dtype)
                PreparedGemm(a, b, out)()
                ref = a @ b
                diff = float(cupy.max(cupy.abs(out - ref)) / (cupy.max(cupy.abs(ref)) + 1e-300))
                rows.append({"dtype": np.dtype(dtype).name, "shape": (B, K, O), "gemm": name,
                             "bitwise_equal": bool((out == ref).all()), "max_rel_diff": diff})
    n_eq = sum(r["bitwise_equal"] for r in rows)
    worst = max(rows, key=lambda r: r["max_rel_diff"])
    log(f"  PreparedGemm vs cupy.matmul: {n_eq}/{len(rows)} bitwise equal; largest relative difference "
        f"{worst['max_rel_diff']:.1e} ({worst['dtype']} {worst['shape']} {worst['gemm']})")
    tol = {"float32": 1e-5, "float64": 1e-13}
    bad = [r for r in rows if r["max_rel_diff"] > tol[r["dtype"]]]
    if bad:
        raise AssertionError(f"PreparedGemm and cupy.matmul differ beyond rounding: {bad[:3]}")
    return rows


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), 512 MiB buffers."""
    import cupy

    n = 512 * 2**20 // 4
    src, dst = cupy.ones(n, dtype=cupy.float32), cupy.empty(n, dtype=cupy.float32)
    us = time_device(lambda: cupy.copyto(dst, src), reps=5, inner=3)["us"]
    gbs = 2 * n * 4 / (us * 1e-6) / 1e9
    log(f"  device copy bandwidth: {gbs:.0f} GB/s (512 MiB, read + write)")
    return gbs


def _hyper(lr: float = 1e-9) -> Any:
    """An optimizer's float64 hyper buffer on the device: constant rate, Adam's betas."""
    import cupy

    from bp_gpu.optim import hyper as H

    h = np.zeros(H.N_HYPER)
    h[[H.SCHEDULE, H.LR, H.BETA1, H.BETA2, H.EPS]] = H.CONSTANT, lr, 0.9, 0.999, 1e-8
    return cupy.asarray(h)


def kernel_cases(sizes: list[int], B: int) -> list[tuple[str, str, Callable[[], None], int]]:
    """(kernel, shape, prepared launch, bytes it must move) for one architecture, float32."""
    import cupy
    from bp_gpu.kernels import (
        bias_sigmoid_forward,
        lamb_update,
        optimizer_update,
        outer_sigmoid_delta_backward,
        output_loss_delta,
        sigmoid_delta_backward,
    )

    from bp_gpu.optim import hyper as H

    s, f4 = 4, cupy.float32
    O = sizes[1]
    A = cupy.random.standard_normal((B, O), dtype=f4)
    b, db = cupy.zeros(O, f4), cupy.empty(O, f4)
    Z = cupy.random.random((B, O), dtype=f4)
    G = cupy.empty((B, O), f4)
    Aout = cupy.random.standard_normal((B, 1), dtype=f4)
    T = (cupy.random.random((B, 1)) < 0.5).astype(f4)
    bo, dbo = cupy.zeros(1, f4), cupy.empty(1, f4)
    D, loss = cupy.random.standard_normal((B, 1), dtype=f4), cupy.zeros(2, cupy.float64)
    Wrow = cupy.random.standard_normal((1, O), dtype=f4)
    shapes = [(o, i) for i, o in zip(sizes[:-1], sizes[1:])]
    n_weights = sum(o * i for o, i in shapes)
    P = n_weights + sum(o for o, _ in shapes)
    segments = np.cumsum([0] + [o * i for o, i in shapes] + [o for o, _ in shapes]).astype(np.int64)
    p, g = cupy.zeros(P, f4), cupy.ones(P, f4)
    no_state, m, mv = cupy.zeros((1, 1), f4), cupy.zeros((1, P), f4), cupy.zeros((2, P), f4)
    return [
        ("bias_sigmoid_forward", f"({B}, {O})", bias_sigmoid_forward.prepare_bias_sigmoid_forward(A, b),
         2 * B * O * s),
        ("sigmoid_delta_backward", f"({B}, {O})", sigmoid_delta_backward.prepare_sigmoid_delta_backward(A, Z, db),
         3 * B * O * s),
        ("outer_sigmoid_delta_backward", f"({B}, {O})",
         outer_sigmoid_delta_backward.prepare_outer_sigmoid_delta_backward(D, Wrow, Z, G, db), 2 * B * O * s),
        ("output_loss_delta", f"({B}, 1)",
         output_loss_delta.prepare_output_loss_delta(Aout, bo, T, 1, 1.0 / B, D, dbo, loss), 3 * B * s),
        ("optimizer_update sgd", f"P={P}",
         optimizer_update.prepare_optimizer_update(H.SGD, p, g, no_state, _hyper(), n_weights), 3 * P * s),
        ("optimizer_update momentum", f"P={P}",
         optimizer_update.prepare_optimizer_update(H.MOMENTUM, p, g, m, _hyper(), n_weights), 5 * P * s),
        ("optimizer_update adam", f"P={P}",
         optimizer_update.prepare_optimizer_update(H.ADAM, p, g, mv, _hyper(), n_weights), 7 * P * s),
        ("lamb_update (2 launches)", f"P={P}",
         lamb_update.prepare_lamb_update(p, g, mv, _hyper(), n_weights, segments), 10 * P * s),
    ]


def kernel_timings(copy_gbs: float) -> list[dict]:
    rows = RESULTS["kernels"] = []
    for arch, (sizes, B) in ARCHS.items():
        try:
            cases = kernel_cases(sizes, B)
        except Exception as exc:
            rows.append({"kernel": "(all)", "arch": arch, "shape": "", "error": f"{type(exc).__name__}: {exc}"})
            log(f"  {arch}: {type(exc).__name__}: {exc}")
            continue
        for name, shape, fn, nbytes in cases:
            try:  # one failing launcher must not hide the others' numbers
                t = time_device(fn)
                gbs = nbytes / (t["us"] * 1e-6) / 1e9
                rows.append({"kernel": name, "arch": arch, "shape": shape, "us": t["us"], "GB/s": gbs,
                             "frac_copy_bw": gbs / copy_gbs, "host_us": t["host_us"], "queued": t["queued"]})
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


def _w1_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = W1[0]
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    T = (rng.random((n, sizes[-1])) < 0.5).astype(np.float32)
    return X, T


def _device_batches(k: int, sizes: list[int], B: int, seed: int = 0) -> list[tuple[Any, Any]]:
    """k distinct CuPy batches, as a user's loop would pass them."""
    import cupy

    rng = np.random.default_rng(seed)
    return [(cupy.asarray(rng.standard_normal((B, sizes[0])), cupy.float32),
             cupy.asarray(rng.random((B, sizes[-1])) < 0.5, cupy.float32)) for _ in range(k)]


def hygiene_verdict(kind: str, batch_times_ms: list[float], sleep_ms: float, allocs: int, expected_allocs: int,
                    pipeline: int = 4) -> dict[str, Any]:
    """The verdict of one hygiene case from what was measured. ``batch_times_ms``: when each step
    (or batch) had been enqueued, from the sleeping kernel's launch; a step that waited for the
    device would come after the sleep ended. ``kind``: "all" (every step must be enqueued during the
    sleep) or "pipelined" (a loop that waits for its double buffer by design: at least ``pipeline``
    batches ahead). Allocations must be exactly the ones the API makes (a returned loss, an epoch's
    order)."""
    ahead = sum(t < sleep_ms for t in batch_times_ms)
    need = len(batch_times_ms) if kind == "all" else min(pipeline, len(batch_times_ms))
    return {"steps": len(batch_times_ms), "enqueued_during_sleep": ahead, "needed": need, "sleep_ms": sleep_ms,
            "last_enqueued_ms": max(batch_times_ms) if batch_times_ms else 0.0, "allocs": allocs,
            "expected_allocs": expected_allocs, "no_host_sync": ahead >= need,
            "no_extra_allocs": allocs == expected_allocs}


def _hygiene_case(run: Callable[[Callable[[], None]], Any], kind: str, expected_allocs: int,
                  sleep_ms: float = 150.0) -> dict[str, Any]:
    """Run ``run(mark)`` (which calls ``mark()`` after each step) behind a sleeping kernel, with
    CuPy's allocations counted; then the verdict."""
    import cupy

    run(lambda: None)  # warm: plans bound, kernels loaded, buffers allocated
    cupy.cuda.get_current_stream().synchronize()
    times: list[float] = []
    hook = _malloc_counter()
    s = sleeper()
    s.sleep(sleep_ms)
    t0 = time.perf_counter()
    with hook:
        run(lambda: times.append((time.perf_counter() - t0) * 1e3))
    cupy.cuda.get_current_stream().synchronize()
    # The sleep's length, measured apart (a second launch of the same length).
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    s.sleep(sleep_ms)
    end.record()
    end.synchronize()
    return hygiene_verdict(kind, times, cupy.cuda.get_elapsed_time(start, end), hook.n, expected_allocs)


def step_hygiene(n_batches: int = 8, epoch_batches: int = 32) -> dict:
    """No host sync and no unexpected device allocation: train_step on CuPy inputs, a compiled
    step (``n_batches`` steps each), and the classifier's epoch loop over resident and over
    streamed data (``epoch_batches`` batches), on W1."""
    import bp_gpu
    from bp_gpu.train import ArraySource, run_epoch

    sizes, B = W1
    batches = _device_batches(n_batches, sizes, B)
    out: dict[str, Any] = RESULTS.setdefault("hygiene", {})

    def train_steps(optimizer: str) -> Callable:
        net = bp_gpu.MLP(sizes, backend="cuda", dtype="float32", seed=0)
        opt = make_optimizer(optimizer, net, 1e-3)

        def run(mark: Callable[[], None]) -> None:
            for X, t in batches:
                net.train_step(X, t, opt)
                mark()

        return run

    def compiled_steps() -> Callable:
        net = bp_gpu.MLP(sizes, backend="cuda", dtype="float32", seed=0)
        step = net.compile_step(make_optimizer("adam", net, 1e-3), B)

        def run(mark: Callable[[], None]) -> None:
            for X, t in batches:
                step(X, t)
                mark()

        return run

    def epoch(placement: str) -> Callable:
        X, T = _w1_data(epoch_batches * B)
        net = bp_gpu.MLP(sizes, backend="cuda", dtype="float32", seed=0)
        opt = make_optimizer("sgd", net, LR)
        source = ArraySource(net._engine, X, T, B, placement)
        order = np.random.default_rng(0).permutation(len(X))

        def run(mark: Callable[[], None]) -> None:
            run_epoch(net, opt, source, None, on_batch=lambda n: mark(), order=order)

        return run

    cases = [  # (name, builds the run, kind, allocations the API makes)
        ("train_step adam", lambda: train_steps("adam"), "all", len(batches)),  # each step's returned loss
        ("train_step lamb", lambda: train_steps("lamb"), "all", len(batches)),
        ("compiled step adam", compiled_steps, "all", len(batches)),
        ("run_epoch resident", lambda: epoch("device"), "all", 1),  # the epoch's order, copied to the device once
        ("run_epoch streamed", lambda: epoch("stream"), "pipelined", 0),
    ]
    for name, build, kind, expected in cases:
        try:
            out[name] = v = _hygiene_case(build(), kind, expected)
            log(f"  {name}: {v['enqueued_during_sleep']}/{v['steps']} steps enqueued during a {v['sleep_ms']:.0f} ms "
                f"sleep (needed {v['needed']}), {v['allocs']} allocations (expected {v['expected_allocs']})")
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  {name}: {type(exc).__name__}: {exc}")
    bad = [k for k, v in out.items() if "error" in v or not (v["no_host_sync"] and v["no_extra_allocs"])]
    if bad:
        raise AssertionError(f"step hygiene failed for {bad}")
    return out


OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "lamb")


def make_optimizer(name: str, net: Any, learning_rate: Any) -> Any:
    """One of ``OPTIMIZERS`` for ``net``, with weight decay (momentum 0.9 for "momentum")."""
    from bp_gpu import optim

    return {"sgd": lambda: optim.SGD(net, learning_rate, weight_decay=0.01),
            "momentum": lambda: optim.SGD(net, learning_rate, momentum=0.9),
            "adam": lambda: optim.Adam(net, learning_rate, weight_decay=0.01),
            "adamw": lambda: optim.AdamW(net, learning_rate, weight_decay=0.05),
            "lamb": lambda: optim.LAMB(net, learning_rate, weight_decay=0.01)}[name]()


def compiled_vs_eager(steps: int = 12) -> dict:
    """W1: a compiled step (CUDA graph) against eager train_step on the same batches, for every
    optimizer under a warm-up + cosine schedule: losses and parameters bit for bit."""
    import cupy

    import bp_gpu

    sizes, B = W1
    batches = _device_batches(4, sizes, B, seed=7)
    out = RESULTS["compiled_vs_eager"] = {}
    for name in OPTIMIZERS:
        sched = bp_gpu.optim.warmup_cosine(0.05, warmup_steps=steps // 4, total_steps=steps, final=0.001)
        a, b = (bp_gpu.MLP(sizes, backend="cuda", dtype="float32", seed=6) for _ in range(2))
        oa, ob = make_optimizer(name, a, sched), make_optimizer(name, b, sched)
        step = b.compile_step(ob, B)
        losses_equal = True
        for k in range(steps):
            X, t = batches[k % len(batches)]
            losses_equal &= float(a.train_step(X, t, oa)) == float(step(X, t))
        pa, pb = a._engine.params, b._engine.params
        out[name] = {"losses_equal": losses_equal, "params_equal": bool((pa == pb).all()),
                     "max_abs_diff": float(cupy.max(cupy.abs(pa - pb))), "steps": ob.step_count}
        log(f"  compiled vs eager, {name}: losses {'equal' if losses_equal else 'DIFFER'}, parameters "
            f"{'equal' if out[name]['params_equal'] else 'differ by ' + format(out[name]['max_abs_diff'], '.1e')}")
    bad = [k for k, v in out.items() if not (v["losses_equal"] and v["params_equal"] and v["steps"] == steps)]
    if bad:
        raise AssertionError(f"compiled step differs from eager train_step for {bad}")
    return out


def host_per_step(calls: int = 32, warm: int = 8, held: int = 3) -> list[dict]:
    """Eager train_step vs the replayed compiled step (SGD, fresh CuPy batches cycling): host
    microseconds to enqueue a step (the device held by a sleeping kernel; ``calls`` steps, few
    enough that the driver's launch queue never fills), device microseconds per step run back to
    back, and wall microseconds per step unheld (what a loop gets)."""
    import cupy

    import bp_gpu

    rows = RESULTS["host_per_step"] = []
    for arch in HOST_ARCHS:
        sizes, B = ARCHS[arch]
        batches = _device_batches(4, sizes, B, seed=3)
        for mode in ("eager train_step", "compiled step"):
            try:
                net = bp_gpu.MLP(sizes, backend="cuda", dtype="float32", seed=0)
                opt = make_optimizer("sgd", net, LR)
                step = net.compile_step(opt, B) if mode == "compiled step" else None
                it = iter(range(1 << 62))

                def one() -> None:
                    X, t = batches[next(it) % len(batches)]
                    if step is None:
                        net.train_step(X, t, opt)
                    else:
                        step(X, t)

                for _ in range(warm):
                    one()
                runs = [behind_sleep(one, calls, 20.0 + calls * 1.0) for _ in range(held)]
                t0 = time.perf_counter()
                for _ in range(calls):
                    one()
                cupy.cuda.get_current_stream().synchronize()
                wall = (time.perf_counter() - t0) / calls * 1e6
                rows.append({"arch": arch, "mode": mode, "batch": B,
                             "host_us": min(h["host_ms"] for h in runs) * 1e3 / calls,
                             "device_us": statistics.median(h["device_ms"] for h in runs) * 1e3 / calls,
                             "wall_us": wall, "queued": all(h["queued"] for h in runs)})
                r = rows[-1]
                log(f"  {arch} {mode}: host {r['host_us']:.1f} us/step, device {r['device_us']:.1f} us/step, "
                    f"wall {r['wall_us']:.1f} us/step")
            except Exception as exc:
                rows.append({"arch": arch, "mode": mode, "error": f"{type(exc).__name__}: {exc}"})
                log(f"  {arch} {mode}: {type(exc).__name__}: {exc}")
    if rows and all("error" in r for r in rows):
        raise RuntimeError(f"every host-per-step measurement failed; first: {rows[0]['error']}")
    return rows


TRAINING_PEERS = ("bp_gpu-step-cuda", "bp_gpu-cuda", "bp_gpu-compiled-cuda", "torch-eager-cuda")


def training_steps(repeats: int = 3) -> list[dict]:
    """One epoch of each peer of ``bp_gpu.bench.peers`` (the benchmark's own loops: plain SGD,
    mean loss, float32, same data, weights and batch order) on W1, W2 and W3, in this process:
    median epoch time over ``repeats`` after a warm-up, per step; the epoch losses must agree."""
    from bp_gpu.bench.peers import PEERS
    from bp_gpu.bench.workloads import WORKLOADS, initial_weights, make_data

    rows = RESULTS["training_steps"] = []
    for wname in TRAINING_WORKLOADS:
        w = WORKLOADS[wname]
        X, T = make_data(w)
        weights = initial_weights(w)
        for pname in TRAINING_PEERS:
            cls = PEERS[pname]
            why = cls.unavailable()
            if why:
                rows.append({"impl": pname, "arch": wname, "batch": w.batch, "skipped": why})
                continue
            try:
                peer = cls(w, X, T, weights)
                peer.warmup()
                times, losses = [], []
                for _ in range(repeats):
                    peer.reset()
                    t0 = time.perf_counter()
                    losses.append(peer.epoch())
                    times.append(time.perf_counter() - t0)
                us = statistics.median(times) / w.n_batches * 1e6
                rows.append({"impl": pname, "arch": wname, "batch": w.batch, "us_per_step": us,
                             "loss": losses[-1], "TFLOP/s": w.flops / statistics.median(times) / 1e12})
                log(f"  {wname} {pname}: {us:.1f} us/step, loss {losses[-1]:.6f}")
                del peer
            except Exception as exc:
                rows.append({"impl": pname, "arch": wname, "batch": w.batch, "error": f"{type(exc).__name__}: {exc}"})
                log(f"  {wname} {pname}: {type(exc).__name__}: {exc}")
    if rows and all("us_per_step" not in r for r in rows):
        raise RuntimeError("no training loop could be timed")
    disagree = []
    for wname in TRAINING_WORKLOADS:
        losses = [r["loss"] for r in rows if r["arch"] == wname and "loss" in r]
        if losses and max(losses) - min(losses) > 1e-4 * max(abs(x) for x in losses):
            disagree.append(wname)
    if disagree:
        raise AssertionError(f"the loops' epoch losses disagree on {disagree} (same data, weights and order)")
    return rows


def host_path_estimate(repeats: int = 10) -> dict:
    """The host-path benchmark (simulator + recorder, in a subprocess) for this checkout: its W1
    estimates, beside the host times measured above."""
    from bp_gpu.bench import host_path

    rep = host_path.report({"now": host_path.run_child(None, repeats=repeats)}, host_path.COSTS)
    out = RESULTS["host_path"] = {r["scenario"]: {"estimate_us": r["estimate"]["total"], "python_us": r["python_us"]}
                                  for r in rep["rows"]}
    for k, v in out.items():
        log(f"  host-path estimate, W1 {k}: {v['estimate_us']:.1f} us/step")
    return out


def data_parallel() -> dict:
    """bp_gpu.distributed's GPU path on one GPU (a one-rank NCCL communicator; two ranks cannot share
    a GPU): its gpu tests, then per architecture the all-reduce and the step around it, and the
    step's hygiene with the all-reduce inside."""
    import importlib.util

    import cupy

    if importlib.util.find_spec("mpi4py") is None:
        raise RuntimeError("mpi4py is not importable (pip install 'bp_gpu[mpi]'): the NCCL path was not exercised")
    from cupy.cuda import nccl
    from mpi4py import MPI

    from bp_gpu import MLP
    from bp_gpu import distributed as D
    from bp_gpu.optim import SGD

    out: dict[str, Any] = RESULTS.setdefault("data_parallel", {"nccl_available": bool(nccl.available)})
    if not nccl.available:
        raise RuntimeError("CuPy has no NCCL here (install the nvidia-nccl wheel for this CUDA): the NCCL path "
                           "was not exercised")
    out["nccl_version"] = nccl.get_version()
    out["tests"] = run_gpu_tests(module="test_gpu_distributed.py")["summary"]
    group = D.ProcessGroup(MPI.COMM_SELF)
    rows = out["steps"] = []
    rng = np.random.default_rng(0)
    for arch in ("W2", "W3"):
        sizes, B = ARCHS[arch]
        net = MLP(sizes, backend="cuda", dtype="float32", seed=0)
        opt = SGD(net, 1e-6)
        X = cupy.asarray(rng.standard_normal((B, sizes[0])), cupy.float32)
        T = cupy.asarray(rng.random((B, sizes[-1])) < 0.5, cupy.float32)
        nccl_reduce = D.make_reducer(group, net._engine, "nccl")
        staged = D.make_reducer(group, net._engine, "mpi-staged")
        row: dict[str, Any] = {"arch": arch, "batch": B, "params": net.n_params, "grad_MB": net.n_params * 4 / 1e6}
        for name, fn in [("allreduce_nccl", nccl_reduce), ("allreduce_staged", staged),
                         ("step", lambda: net._step(X, T, opt, 1 / B)),
                         ("step_nccl", lambda: net._step(X, T, opt, 1 / B, reduce_grads=nccl_reduce))]:
            t = time_device(fn)
            row[f"{name}_us"], row[f"{name}_host_us"] = t["us"], t["host_us"]
        hook = _malloc_counter()
        with hook:
            for _ in range(5):
                net._step(X, T, opt, 1 / B, reduce_grads=nccl_reduce)
        nccl_reduce.finish()
        row["device_allocs_per_step_nccl"] = hook.n / 5
        rows.append(row)
        log(f"  {arch}: P={net.n_params:,} ({row['grad_MB']:.1f} MB): NCCL all-reduce "
            f"{row['allreduce_nccl_us']:.1f} us (1 rank), staged MPI {row['allreduce_staged_us']:.1f} us; "
            f"step {row['step_us']:.1f} us, with NCCL "
            f"{row['step_nccl_us']:.1f} us (enqueued in {row['step_nccl_host_us']:.1f} us), "
            f"{row['device_allocs_per_step_nccl']:.1f} allocations per step")
    sizes, B = ARCHS["W2"]
    net = MLP(sizes, backend="cuda", dtype="float32", seed=0)
    opt = SGD(net, 1e-6)
    reduce = D.make_reducer(group, net._engine, "nccl")
    batches = _device_batches(4, sizes, B)

    def run(mark: Callable[[], None]) -> None:
        for X, T in batches:
            net._step(X, T, opt, 1 / B, reduce_grads=reduce)
            mark()

    hy = out["hygiene"] = _hygiene_case(run, "all", 0)
    reduce.finish()
    log(f"  step with the NCCL all-reduce: {hy['enqueued_during_sleep']}/{hy['steps']} enqueued during a "
        f"{hy['sleep_ms']:.0f} ms sleep, {hy['allocs']} allocations")
    bad = [r["arch"] for r in rows if r["device_allocs_per_step_nccl"] > 0]
    if bad or not (hy["no_host_sync"] and hy["no_extra_allocs"]):
        raise AssertionError(f"data-parallel step hygiene: allocations per step on {bad}, "
                             f"no host sync: {hy['no_host_sync']}, allocations: {hy['allocs']}")
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
    lp = RESULTS.get("launch_path")
    if lp:
        occ = lp.get("occupancy") or []
        agree = sum(r["ours"] == r["driver"] for r in occ)
        log(f"launch path: {'prepared (one cuLaunchKernel)' if lp['packed'] else 'FALLBACK to Numba dispatcher'}; "
            f"occupancy table = driver for {agree}/{len(occ)} kernels")
    gemm = RESULTS.get("prepared_gemm")
    if gemm:
        log(f"PreparedGemm vs cupy.matmul: {sum(r['bitwise_equal'] for r in gemm)}/{len(gemm)} bitwise equal, "
            f"largest relative difference {max(r['max_rel_diff'] for r in gemm):.1e}")
    hy = RESULTS.get("hygiene")
    if hy:
        for name, v in hy.items():
            if "error" in v:
                log(f"step hygiene, {name}: error: {v['error']}")
                continue
            log(f"step hygiene, {name}: {v['enqueued_during_sleep']}/{v['steps']} enqueued during a "
                f"{v['sleep_ms']:.0f} ms kernel ({'no host sync' if v['no_host_sync'] else 'HOST SYNC'}), "
                f"{v['allocs']} device allocations (expected {v['expected_allocs']})")
    cve = RESULTS.get("compiled_vs_eager")
    if cve:
        log("compiled step vs eager train_step: " + ", ".join(
            f"{k} {'bit for bit' if v['losses_equal'] and v['params_equal'] else 'DIFFERENT'}" for k, v in cve.items()))
    if copy_gbs:
        log(f"device-to-device copy bandwidth: {copy_gbs:.0f} GB/s")
    if kernels:
        log(f"\n{'kernel':<30}{'arch':<5}{'shape':<16}{'us':>9}{'GB/s':>9}{'of copy':>9}{'host us':>9}")
        for r in kernels:
            if "error" in r:
                log(f"{r['kernel']:<30}{r['arch']:<5}{r['shape']:<16}  error: {r['error']}")
                continue
            flag = "" if r.get("queued", True) else "  (launch-bound: enqueue outlasted the sleep)"
            log(f"{r['kernel']:<30}{r['arch']:<5}{r['shape']:<16}{r['us']:>9.1f}{r['GB/s']:>9.0f}"
                f"{r['frac_copy_bw']:>9.0%}{r['host_us']:>9.1f}{flag}")
    hps = RESULTS.get("host_per_step")
    if hps:
        est = (RESULTS.get("host_path") or {})
        log(f"\n{'host time per step (SGD)':<28}{'arch':<6}{'host us':>9}{'device us':>11}{'wall us':>9}")
        for r in hps:
            if "error" in r:
                log(f"{r['mode']:<28}{r['arch']:<6}  error: {r['error']}")
                continue
            log(f"{r['mode']:<28}{r['arch']:<6}{r['host_us']:>9.1f}{r['device_us']:>11.1f}{r['wall_us']:>9.1f}")
        if est:
            log("host-path estimate (simulator), W1: " + ", ".join(f"{k} {v['estimate_us']:.0f} us"
                                                                   for k, v in est.items()))
    if steps:
        torch_us = {r["arch"]: r["us_per_step"] for r in steps
                    if r["impl"] == "torch-eager-cuda" and "us_per_step" in r}
        log(f"\n{'epoch per step (SGD, f32)':<26}{'arch':<6}{'batch':>7}{'us/step':>10}{'TFLOP/s':>9}{'vs torch':>9}"
            f"{'loss':>11}")
        for r in steps:
            if "error" in r or "skipped" in r:
                log(f"{r['impl']:<26}{r['arch']:<6}{r.get('batch', ''):>7}  "
                    f"{'error: ' + r['error'] if 'error' in r else 'skipped: ' + r['skipped']}")
                continue
            ref = torch_us.get(r["arch"])
            speed = f"{ref / r['us_per_step']:.2f}x" if ref else "-"
            log(f"{r['impl']:<26}{r['arch']:<6}{r['batch']:>7}{r['us_per_step']:>10.1f}{r['TFLOP/s']:>9.2f}"
                f"{speed:>9}{r['loss']:>11.6f}")
    dp = RESULTS.get("data_parallel")
    if dp and dp.get("steps"):
        log(f"\ndata-parallel (NCCL {dp.get('nccl_version')}, one rank): tests {dp.get('tests')}")
        for r in dp["steps"]:
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
    # Each part below keeps its rows in RESULTS as it goes, so a failure keeps what came before it.
    section("launch path", launch_path)  # the process's first launches: it sees the fallback if any
    section("cuda vs cpu", cuda_vs_cpu)
    section("prepared gemm", prepared_gemm_vs_cupy)
    section("step hygiene", step_hygiene)
    copy_gbs = section("copy bandwidth", copy_bandwidth)
    RESULTS["copy_GB/s"] = copy_gbs
    if copy_gbs:
        section("kernel timings", lambda: kernel_timings(copy_gbs))
    section("compiled vs eager", compiled_vs_eager)
    section("host per step", host_per_step)
    section("host path estimate", host_path_estimate)
    section("training steps", training_steps)
    section("data-parallel NCCL", data_parallel)
    kernels, steps = RESULTS.get("kernels"), RESULTS.get("training_steps")
    RESULTS["seconds"] = round(time.perf_counter() - t_start, 1)
    print_table(copy_gbs, kernels, steps)
    _write_json()
    return 0 if all(v["ok"] for v in RESULTS["sections"].values()) else 1


def _write_json(quiet: bool = False) -> None:
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / "device_check.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(RESULTS, indent=2, default=str))
        os.replace(tmp, path)  # a reader never sees half a file
        if not quiet:
            log(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
