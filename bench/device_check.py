"""The one prepared check of the CUDA backend on a lent GPU (H100/H200), within a time budget.

Run it as ``bash bench/device_check.sh [--budget SECONDS] [--parts NAME,...]`` (installs the checkout
offline, then runs this; ``python3 bench/device_check.py`` when bp_gpu is already installed). A lent
machine gives us 15 minutes, its start included, and 10 per command; the default budget, 420 s,
holds the parts' timeouts (``PARTS``: 395 s) and ``RESERVE_S`` (20 s) for the table, and leaves the
lease room for a second, shorter run: ``--parts second`` (``SECOND_PARTS``, budget 300 s: mixed
precision, and bp_gpu inside PyTorch), whose parts also run at the end of the default run when its
budget has time left.

The parts, in the order of what we most need to learn, each with its own timeout:

1. versions (no device needed): Python, NumPy, Numba, numba-cuda, CuPy, the CUDA driver and runtime,
   cuda-bindings, PyTorch, mpi4py, NCCL, the device, and whether ``device_check.sh``'s offline install
   worked, in one screen;
2. launch path: a prepared launch is one ``cuLaunchKernel`` (not Numba's dispatcher) in this process
   and in a fresh one whose kernels come from Numba's disk cache (``_Kernel._rebuild``); an empty
   batch launches packed; a launch refuses another current device (with two devices); each
   kernel's blocks per SM, our occupancy table against the driver's;
3. cuda vs cpu: ``loss_and_grad`` of ``backend="cuda"`` against ``backend="cpu"`` on random problems;
4. gpu tests: the ``gpu``-marked tests (``tests/test_gpu.py``) in a subprocess;
5. compiled vs eager: a compiled step (a CUDA graph, on its own stream and cuBLAS handle) against
   eager ``train_step``, bit for bit, for every optimizer under a schedule;
6. capture: compiled steps made and dropped give back their cuBLAS handles and memory; a capture
   that fails raises its own error (not ``end_capture``'s) and leaves the device usable;
7. host per step: host and device microseconds per step, eager ``train_step`` vs the replayed
   compiled step, on W1 and W2 (host time measured while a sleeping kernel holds the device);
8. step hygiene: no host sync and no allocation beyond the API's own for ``train_step``, a compiled
   step and the classifier's epoch loop over resident and streamed data;
9. kernel bandwidth: each fused kernel's device time and GB/s at W1-W3 (launches queued behind a
   sleeping kernel), as a fraction of the measured device copy bandwidth;
10. training epochs: the benchmark's loops (``train_step``, the classifier's loop, the compiled step,
    PyTorch eager: ``bp_gpu.bench.peers``) on W1-W3, per step;
11. data-parallel NCCL: ``tests/test_gpu_distributed.py``, then the one-rank NCCL all-reduce, the
    step with and without it, and its hygiene (needs mpi4py and CuPy's NCCL).

Nothing that runs without a GPU is repeated here (the host-path estimate is ``bench/host_path.py``,
run on any machine). Before each part the budget left must hold its timeout, else it is skipped
with a line saying so; while it runs, ``SIGALRM`` interrupts it at its timeout, and a part stuck in
a CUDA call ``HARD_KILL_GRACE_S`` later is ended with the process (``faulthandler`` prints where).
``$OUT/device_check.json`` (when ``OUT`` is set) is rewritten atomically before and after every
part: a killed run leaves what it measured and the part it was in. Exit status: 0 all parts ok,
1 a part failed or was skipped, 2 no usable device (after the versions).

Adding a part: write a function of no arguments that records what it measures under
``RESULTS[<its key>]`` as it goes (so a failure keeps what came before), logs its lines with
``log``, and raises when what it checks is wrong; add one line ``Part("name", timeout_s, function)``
at its place in ``PARTS`` (and its lines to ``print_table``). Sizes it uses go in module constants,
which the simulator dry run (tests/sim/test_device_check_sim.py) shrinks to run every part;
tests/test_device_check.py fails when the timeouts no longer fit the default budget.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bp_gpu.bench import device_timing
from bp_gpu.bench.device_timing import behind_sleep, hygiene_case, malloc_counter, synchronize, time_device

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
W1 = ([28, 64, 64, 1], 1024)
ARCHS = {"W1": W1, "W2": ([256, 1024, 1024, 1], 4096), "W3": ([128, 512, 512, 1], 65536)}
HOST_ARCHS = ("W1", "W2")  # host and device time per step, eager vs replayed
DP_ARCHS = ("W2", "W3")  # the NCCL all-reduce and the step around it
TRAINING_WORKLOADS = ("W1", "W2", "W3")  # of bp_gpu.bench.workloads, for whole epochs
# cuda vs cpu: (layer sizes, rows, dtype)
PARITY_PROBLEMS = [([30, 200, 1], 5000, "float64"), ([64, 257, 129, 3], 20001, "float64"),
                   ([256, 1024, 1024, 1], 4096, "float32")]
COPY_MIB = 512  # the copy-bandwidth buffers
LAUNCH_SHAPE = (1024, 64)  # the launch path's forward batch
LR = 0.1
DEFAULT_BUDGET_S = 420.0
# The second command of a lease (SECOND_PARTS): a lease is 15 minutes, its start included (1-2 min),
# so the default run, this one and a start fit with a minute to spare.
SECOND_BUDGET_S = 300.0
LEASE_S, START_S = 900.0, 120.0
RESERVE_S = 20.0  # kept for the table and the JSON after the last part
HARD_KILL_GRACE_S = 15.0
RESULTS: dict[str, Any] = {"parts": {}}


def log(msg: str) -> None:
    print(msg, flush=True)


# -- running the parts within the budget ------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One part of the check: ``run()`` records under ``RESULTS`` and raises when its check fails."""

    name: str
    timeout_s: float
    run: Callable[[], Any]
    needs_device: bool = True


class PartTimeout(BaseException):
    """A part ran out of its time (a BaseException: a part's own ``except Exception`` around one of
    its measurements must not swallow it)."""


_deadline = math.inf  # the running part's, on time.monotonic()


def time_left() -> float:
    """Seconds the running part has left (inf outside a part)."""
    return _deadline - time.monotonic()


def subprocess_timeout() -> float:
    """A timeout for a subprocess of the running part: ending 5 s before the part does, so that its
    output is kept (at most 600 s, the lease's limit per command)."""
    return max(1.0, min(time_left(), 600.0) - 5.0)


@contextlib.contextmanager
def time_limit(seconds: float, hard_kill: bool) -> Iterator[None]:
    """Raise PartTimeout in the main thread after ``seconds`` (SIGALRM interrupts Python code, not a
    C call that never returns); with ``hard_kill``, end the process ``HARD_KILL_GRACE_S`` later if
    the part is still running, after ``faulthandler`` has printed every thread's stack."""
    global _deadline

    def alarm(signum: int, frame: Any) -> None:
        raise PartTimeout(f"timed out after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    _deadline = time.monotonic() + seconds
    signal.setitimer(signal.ITIMER_REAL, seconds)
    if hard_kill:
        faulthandler.dump_traceback_later(seconds + HARD_KILL_GRACE_S, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if hard_kill:
            faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)
        _deadline = math.inf


def planned_seconds(parts: list[Part]) -> float:
    """The budget the parts plan for: the sum of their timeouts, in order, and the reserve."""
    return sum(p.timeout_s for p in parts) + RESERVE_S


def run_parts(parts: list[Part], budget_s: float, device: bool, hard_kill: bool = True) -> None:
    """Run ``parts`` in order, each under its timeout, while the budget left holds it; a part that
    fails is recorded and printed and the next one runs; the JSON is rewritten around each."""
    start = time.monotonic()
    for part in parts:
        left = budget_s - RESERVE_S - (time.monotonic() - start)
        record: dict[str, Any] = {"timeout_s": part.timeout_s}
        RESULTS["parts"][part.name] = record
        if part.needs_device and not device:
            record.update(ok=False, skipped="no usable CUDA device")
        elif part.timeout_s > left:
            record.update(ok=False, skipped=f"needs {part.timeout_s:.0f} s, {max(left, 0):.0f} s of the "
                                            f"{budget_s:.0f} s budget left")
        if "skipped" in record:
            log(f"[{part.name}] skipped: {record['skipped']}")
            write_json()
            continue
        log(f"[{part.name}] (timeout {part.timeout_s:.0f} s)")
        RESULTS["running"] = part.name
        write_json()
        t0 = time.monotonic()
        try:
            with time_limit(part.timeout_s, hard_kill):
                part.run()
            record["ok"] = True
        except (Exception, PartTimeout) as exc:  # report and go on: one broken part must not hide the others
            record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            log(f"[{part.name}] FAILED: {type(exc).__name__}: {exc}")
        record["seconds"] = round(time.monotonic() - t0, 1)
        del RESULTS["running"]
        write_json()


def write_json() -> None:
    """RESULTS as ``$OUT/device_check.json``, atomically (a reader never sees half a file)."""
    out = os.environ.get("OUT")
    if out:
        from bp_gpu._files import atomic_write

        Path(out).mkdir(parents=True, exist_ok=True)
        with atomic_write(Path(out) / "device_check.json", "w") as f:
            f.write(json.dumps(RESULTS, indent=2, default=str))


# -- 1. versions ------------------------------------------------------------------------------------
def _cuda_version(v: int) -> str:
    """A CUDA version number as the toolkit writes it: 13000 -> "13.0", 12080 -> "12.8"."""
    return f"{v // 1000}.{v % 1000 // 10}"


def _probe(found: dict[str, str], name: str, read: Callable[[], Any]) -> None:
    try:
        found[name] = str(read())
    except Exception as exc:  # not there, or not usable: that is the answer
        found[name] = f"unavailable ({type(exc).__name__}: {exc})"


def versions() -> dict[str, str]:
    """What this machine runs, in one screen: every version that can explain a result, the device,
    and how ``device_check.sh`` made bp_gpu importable."""
    import importlib

    def module_version(name: str) -> Callable[[], str]:
        return lambda: importlib.import_module(name).__version__

    def cupy_runtime(fn: str) -> Callable[[], str]:
        return lambda: _cuda_version(getattr(importlib.import_module("cupy").cuda.runtime, fn)())

    def device() -> str:
        import cupy

        rt = cupy.cuda.runtime
        p = rt.getDeviceProperties(cupy.cuda.Device().id)
        name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
        return (f"{name}, cc {p['major']}.{p['minor']}, {p['multiProcessorCount']} SMs, "
                f"{p['totalGlobalMem'] / 2**30:.0f} GiB ({rt.getDeviceCount()} visible)")

    def numba_cuda() -> str:
        import numba_cuda
        from bp_gpu.kernels import _launch

        checked = _launch.packed_launch_checked(numba_cuda.__version__)
        return numba_cuda.__version__ + ("" if checked else " (not a version the packed launch was checked "
                                                            "against: launches go through Numba's dispatcher)")

    def torch() -> str:
        import torch

        return f"{torch.__version__} (CUDA {torch.version.cuda}, device usable: {torch.cuda.is_available()})"

    def nccl() -> str:
        from cupy.cuda import nccl

        return f"{nccl.get_version()}" if nccl.available else "not in this CuPy"

    found = RESULTS["versions"] = {"python": platform.python_version()}
    for name, read in [("numpy", module_version("numpy")), ("numba", module_version("numba")),
                       ("numba-cuda", numba_cuda), ("cupy", module_version("cupy")),
                       ("CUDA driver", cupy_runtime("driverGetVersion")),
                       ("CUDA runtime", cupy_runtime("runtimeGetVersion")),
                       ("cuda-bindings", module_version("cuda.bindings")), ("torch", torch),
                       ("mpi4py", module_version("mpi4py")), ("NCCL", nccl), ("device", device)]:
        _probe(found, name, read)
    found["bp_gpu install"] = os.environ.get("BP_GPU_INSTALL", "not through device_check.sh")
    width = max(len(k) for k in found)
    for k, v in found.items():
        log(f"  {k:<{width}}  {v}")
    return found


# -- 2. launch path ---------------------------------------------------------------------------------
def launch_report(shape: tuple[int, int] = (1024, 64)) -> dict[str, Any]:
    """How prepared launches go in this process: bias_sigmoid_forward on a ``shape`` batch (its
    path, and whether its kernel came from Numba's disk cache: a kernel rebuilt from it has no
    ``py_func``), sigmoid_delta_backward on a batch of no rows (its path, and its column sums,
    which must be zeros), and the fallback causes so far. Also run in a fresh process."""
    from bp_gpu.kernels import _launch
    from bp_gpu.kernels import bias_sigmoid_forward as forward
    from bp_gpu.kernels import sigmoid_delta_backward as backward

    from bp_gpu.cuda_host import array_module

    xp = array_module()
    A, b = xp.zeros(shape, np.float32), xp.zeros(shape[1], np.float32)
    launch = forward.prepare_bias_sigmoid_forward(A, b)
    launch()
    kernel = _launch.compiled(forward.bias_sigmoid_forward_kernel, (_launch.arg(A, "A"), _launch.arg(b, "b")))
    G, Z, db = xp.zeros((0, 5), np.float32), xp.zeros((0, 5), np.float32), xp.full(5, 7.0, np.float32)
    empty = backward.prepare_sigmoid_delta_backward(G, Z, db)
    empty()
    return {"path": launch.path, "from_disk_cache": None if kernel is None else not hasattr(kernel, "py_func"),
            "empty_batch_path": empty.path, "empty_batch_sums_zero": bool((db == 0).all()),
            "fallback_causes": _launch.fallback_causes()}


def _fresh_process_launch_report() -> dict[str, Any]:
    """``launch_report`` in a new process: its kernels come from the disk cache this one filled."""
    # -P: no checkout directory on sys.path, so bp_gpu is the installed one (with bp_gpu.kernels),
    # not the bare bp_gpu/ folder of the checkout (device_check.sh may install it as a symlink tree).
    code = ("import json; from bp_gpu.bench.device_check import launch_report; "
            f"print(json.dumps(launch_report({LAUNCH_SHAPE!r})))")
    py = [sys.executable] + (["-P"] if sys.version_info >= (3, 11) else [])
    proc = subprocess.run(py + ["-c", code], cwd=ROOT, capture_output=True, text=True, timeout=subprocess_timeout())
    if proc.returncode != 0:
        raise RuntimeError(f"the fresh process failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def _driver_blocks_per_sm(kernel: Any, threads: int) -> int:
    """The driver's occupancy query for a compiled kernel."""
    from numba.cuda.cudadrv.devices import get_context

    return int(get_context().get_active_blocks_per_multiprocessor(kernel._codelibrary.get_cufunc(), threads, 0))


def _device_binding() -> str:
    """A launch prepared on device 0, called with device 1 current, must refuse (two devices only)."""
    import cupy
    from bp_gpu.kernels import bias_sigmoid_forward as forward

    if cupy.cuda.runtime.getDeviceCount() < 2:
        return "not exercised: one device (tests/test_launch_packing.py checks the refusal)"
    with cupy.cuda.Device(0):
        launch = forward.prepare_bias_sigmoid_forward(cupy.zeros((4, 3), np.float32), cupy.zeros(3, np.float32))
    with cupy.cuda.Device(1):
        try:
            launch()
        except RuntimeError as exc:
            return f"refused: {exc}"
    raise AssertionError("a launch prepared on device 0 ran with device 1 current")


def launch_path() -> dict[str, Any]:
    """Prepared launches are packed ``cuLaunchKernel`` calls here and in a fresh process (kernels
    from the disk cache), an empty batch included; the device binding; occupancy vs the driver."""
    from bp_gpu.kernels import _launch, _occupancy
    from numba import cuda

    out = RESULTS["launch_path"] = {"this process": launch_report(LAUNCH_SHAPE)}
    out["fresh process"] = _fresh_process_launch_report()
    for where in ("this process", "fresh process"):
        r = out[where]
        log(f"  {where}: {r['path']} launch (kernel from the disk cache: {r['from_disk_cache']}), empty batch "
            f"{r['empty_batch_path']} (column sums zero: {r['empty_batch_sums_zero']}), fallbacks "
            f"{r['fallback_causes'] or 'none'}")
    out["device binding"] = _device_binding()
    log(f"  device binding: {out['device binding']}")
    cc = tuple(cuda.get_current_device().compute_capability)
    rows = out["occupancy"] = []
    for name, dtype, kernel in _compiled_kernels():
        regs, smem = kernel.regs_per_thread, kernel.shared_mem_per_block
        ours = _occupancy.blocks_per_sm(cc, regs, _launch.DEVICE_THREADS, smem) if cc in _occupancy.TARGETS else None
        rows.append({"kernel": name, "dtype": dtype, "registers": regs, "ours": ours,
                     "driver": _driver_blocks_per_sm(kernel, _launch.DEVICE_THREADS)})
        r = rows[-1]
        log(f"  {name:<38}{dtype:<9}{regs:>4} registers: {ours} blocks/SM (our table), {r['driver']} (driver)")
    bad = [w for w in ("this process", "fresh process")
           if not (out[w]["path"] == out[w]["empty_batch_path"] == "packed" and out[w]["empty_batch_sums_zero"]
                   and not out[w]["fallback_causes"])]
    if not out["fresh process"]["from_disk_cache"]:
        bad.append("the fresh process compiled its kernel instead of loading it from the disk cache")
    if bad:
        raise RuntimeError(f"prepared launches are not all packed: {bad}")
    mismatched = [r["kernel"] for r in rows if r["ours"] is not None and r["ours"] != r["driver"]]
    if mismatched:
        raise AssertionError(f"occupancy table disagrees with the driver for {mismatched}")
    return out


# -- 3. cuda vs cpu ---------------------------------------------------------------------------------
def cuda_vs_cpu() -> list[dict]:
    """``loss_and_grad`` of the two backends on random problems (PARITY_PROBLEMS), both conventions."""
    from bp_gpu import MLP
    from bp_gpu.cuda_host import array_module

    xp = array_module()
    rng = np.random.default_rng(1)
    rows = RESULTS["cuda_vs_cpu"] = []  # filled as it goes: a failure keeps the rows before it
    bad = []
    for sizes, n, dtype in PARITY_PROBLEMS:
        for pc in (0, 1):
            kw = dict(dtype=dtype, positive_class=pc, seed=int(rng.integers(1 << 30)))
            gpu, cpu = MLP(sizes, backend="cuda", **kw), MLP(sizes, backend="cpu", **kw)
            X = rng.standard_normal((n, sizes[0]))
            t = (rng.random((n, sizes[-1])) < 0.5).astype(float)
            l1, g1 = gpu.loss_and_grad(xp.asarray(X), xp.asarray(t))
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


# -- 4. gpu tests -----------------------------------------------------------------------------------
def run_gpu_tests(module: str = "test_gpu.py") -> dict:
    """The ``gpu``-marked tests of ``TESTS/module`` in a subprocess, within the part's time; the
    slowest five are listed. A skip fails: the device is usable here, so the tests must run."""
    # -P: see _fresh_process_launch_report.
    py = [sys.executable] + (["-P"] if sys.version_info >= (3, 11) else [])
    cmd = py + ["-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "--durations=5", str(TESTS / module)]
    timeout = subprocess_timeout()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:  # keep what it printed: which test was slow or hung
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                      for x in (exc.stdout, exc.stderr))
        rc = f"timeout after {timeout:.0f} s"
    tail = out.strip().splitlines()[-20:]
    log("\n".join(tail))
    if rc != 0:
        raise RuntimeError(f"gpu tests failed (exit {rc}): {tail[-1] if tail else ''}")
    if not tail or " passed" not in tail[-1] or "skipped" in tail[-1]:
        # The device is usable here, so a skip means the subprocess saw no device: not a pass.
        raise RuntimeError(f"gpu tests did not all run: {tail[-1] if tail else 'no output'}")
    return {"summary": tail[-1]}


def gpu_tests() -> dict:
    RESULTS["gpu_tests"] = out = run_gpu_tests()
    return out


# -- 5. compiled vs eager ---------------------------------------------------------------------------
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "lamb")
COMPILED_STEPS = 12


def make_optimizer(name: str, net: Any, learning_rate: Any) -> Any:
    """One of ``OPTIMIZERS`` for ``net``, with weight decay (momentum 0.9 for "momentum")."""
    from bp_gpu import optim

    return {"sgd": lambda: optim.SGD(net, learning_rate, weight_decay=0.01),
            "momentum": lambda: optim.SGD(net, learning_rate, momentum=0.9),
            "adam": lambda: optim.Adam(net, learning_rate, weight_decay=0.01),
            "adamw": lambda: optim.AdamW(net, learning_rate, weight_decay=0.05),
            "lamb": lambda: optim.LAMB(net, learning_rate, weight_decay=0.01)}[name]()


def compiled_vs_eager() -> dict:
    """W1: a compiled step (a CUDA graph, captured on its own stream with its own cuBLAS handle)
    against eager train_step (the caller's stream and handle) on the same batches, for every
    optimizer under a warm-up + cosine schedule: losses and parameters bit for bit. The two cuBLAS
    handles are configured alike; that they then compute the same bits is what this measures."""
    import bp_gpu
    from bp_gpu.cuda_host import array_module

    xp = array_module()
    sizes, B = W1
    steps = COMPILED_STEPS
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
                     "max_abs_diff": float(xp.max(xp.abs(pa - pb))), "steps": ob.step_count}
        log(f"  compiled vs eager, {name}: losses {'equal' if losses_equal else 'DIFFER'}, parameters "
            f"{'equal' if out[name]['params_equal'] else 'differ by ' + format(out[name]['max_abs_diff'], '.1e')}")
    bad = [k for k, v in out.items() if not (v["losses_equal"] and v["params_equal"] and v["steps"] == steps)]
    if bad:
        raise AssertionError(f"compiled step differs from eager train_step for {bad}")
    return out


# -- 6. capture: errors and lifetime ----------------------------------------------------------------
CAPTURE_ROUNDS = 4


class _SyncingOptimizer:
    """An optimizer whose step ends by synchronizing its stream: during a capture that is
    ``cudaErrorStreamCaptureUnsupported``, and it invalidates the capture."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer

    def device_buffers(self) -> tuple[Any, Any]:
        return self.optimizer.device_buffers()

    def _bind(self) -> list[Callable[[], None]]:
        import cupy

        return [*self.optimizer._bind(), lambda: cupy.cuda.get_current_stream().synchronize()]


def capture_errors_and_lifetime() -> dict:
    """Compiled steps made and dropped (``CAPTURE_ROUNDS``) leave no cuBLAS handle and no memory
    behind (each held a 32 MiB workspace); a capture that fails raises its own error, not
    ``end_capture``'s, frees what it bound, and the device trains on afterwards."""
    import gc

    import cupy

    import bp_gpu
    from bp_gpu import cublas_gemm
    from bp_gpu.cuda_graph import capture_step

    out = RESULTS["capture"] = {}
    sizes, B = W1
    net = bp_gpu.MLP(sizes, backend="cuda", dtype="float32", seed=0)
    opt = make_optimizer("sgd", net, LR)
    X, t = _device_batches(1, sizes, B)[0]
    net.compile_step(opt, B)(X, t)  # warm: kernels loaded, the pool's first blocks; dropped at once
    gc.collect()
    pool = cupy.get_default_memory_pool()
    handles, used = len(cublas_gemm._handles), pool.used_bytes()
    for _ in range(CAPTURE_ROUNDS):
        net.compile_step(opt, B)(X, t)
        gc.collect()
    out["handles_left"] = len(cublas_gemm._handles) - handles
    out["bytes_left_per_step"] = (pool.used_bytes() - used) / CAPTURE_ROUNDS
    log(f"  {CAPTURE_ROUNDS} compiled steps made and dropped: {out['handles_left']} cuBLAS handles and "
        f"{out['bytes_left_per_step'] / 2**20:.2f} MiB per step left behind")
    e = net._engine
    e._prepare(B)
    Xb, Tb = cupy.zeros((B, sizes[0]), cupy.float32), cupy.zeros((B, sizes[-1]), cupy.float32)
    handles = len(cublas_gemm._handles)
    try:
        capture_step(e, _SyncingOptimizer(opt), Xb, Tb, 1.0 / B, net.positive_class)
        out["failed_capture"] = None
    except Exception as exc:
        out["failed_capture"] = f"{type(exc).__name__}: {exc}"
    gc.collect()
    out["handles_left_by_failed_capture"] = len(cublas_gemm._handles) - handles
    out["loss_after"] = float(net.train_step(X, t, opt))
    log(f"  a capture that synchronizes: {out['failed_capture']}; {out['handles_left_by_failed_capture']} handles "
        f"left; a train_step after it: loss {out['loss_after']:.6f}")
    problems = []
    if out["handles_left"] or out["bytes_left_per_step"] > 2**20:
        problems.append("compiled steps leave resources behind")
    if out["failed_capture"] is None or "Invalidated" in out["failed_capture"]:
        problems.append(f"the failed capture raised {out['failed_capture']!r}, not its own error")
    if out["handles_left_by_failed_capture"] or not math.isfinite(out["loss_after"]):
        problems.append("the failed capture left a handle behind or the device unusable")
    if problems:
        raise AssertionError("; ".join(problems))
    return out


# -- 7. host per step -------------------------------------------------------------------------------
HOST_CALLS, HOST_WARM, HOST_HELD = 32, 8, 3


def host_per_step() -> list[dict]:
    """Eager train_step vs the replayed compiled step (SGD, fresh CuPy batches cycling): host
    microseconds to enqueue a step (the device held by a sleeping kernel; ``HOST_CALLS`` steps, few
    enough that the driver's launch queue never fills), device microseconds per step run back to
    back, and wall microseconds per step unheld (what a loop gets)."""
    import bp_gpu

    rows = RESULTS["host_per_step"] = []
    calls = HOST_CALLS
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

                for _ in range(HOST_WARM):
                    one()
                runs = [behind_sleep(one, calls, 20.0 + calls * 1.0) for _ in range(HOST_HELD)]
                t0 = time.perf_counter()
                for _ in range(calls):
                    one()
                synchronize()
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


# -- 8. step hygiene --------------------------------------------------------------------------------
HYGIENE_BATCHES, HYGIENE_EPOCH_BATCHES = 8, 32


def step_hygiene() -> dict:
    """No host sync and no unexpected device allocation: train_step on CuPy inputs, a compiled
    step (``HYGIENE_BATCHES`` steps each), and the classifier's epoch loop over resident and over
    streamed data (``HYGIENE_EPOCH_BATCHES`` batches), on W1."""
    import bp_gpu
    from bp_gpu.train import ArraySource, run_epoch

    sizes, B = W1
    batches = _device_batches(HYGIENE_BATCHES, sizes, B)
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
        X, T = _w1_data(HYGIENE_EPOCH_BATCHES * B)
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
            out[name] = v = hygiene_case(build(), kind, expected)
            log(f"  {name}: {v['enqueued_during_sleep']}/{v['steps']} steps enqueued during a {v['sleep_ms']:.0f} ms "
                f"sleep (needed {v['needed']}), {v['allocs']} allocations (expected {v['expected_allocs']})")
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  {name}: {type(exc).__name__}: {exc}")
    bad = [k for k, v in out.items() if "error" in v or not (v["no_host_sync"] and v["no_extra_allocs"])]
    if bad:
        raise AssertionError(f"step hygiene failed for {bad}")
    return out


# -- 9. kernel bandwidth ----------------------------------------------------------------------------
def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), ``COPY_MIB`` MiB buffers."""
    import cupy

    n = COPY_MIB * 2**20 // 4
    src, dst = cupy.ones(n, dtype=cupy.float32), cupy.empty(n, dtype=cupy.float32)
    reps, inner = min(5, device_timing.REPS), min(3, device_timing.INNER)  # 512 MiB copies: few are enough
    us = time_device(lambda: cupy.copyto(dst, src), reps=reps, inner=inner)["us"]
    gbs = 2 * n * 4 / (us * 1e-6) / 1e9
    log(f"  device copy bandwidth: {gbs:.0f} GB/s ({COPY_MIB} MiB, read + write)")
    return gbs


def kernel_bandwidth() -> list[dict]:
    """Each fused kernel's device time at W1-W3 (``kernel_cases``), as GB/s of the bytes it must
    move and as a fraction of the device's copy bandwidth."""
    copy_gbs = RESULTS["copy_GB/s"] = copy_bandwidth()
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


# -- 10. training epochs ----------------------------------------------------------------------------
TRAINING_PEERS = ("bp_gpu-step-cuda", "bp_gpu-cuda", "bp_gpu-compiled-cuda", "torch-eager-cuda")
TRAINING_REPEATS = 3


def training_epochs() -> list[dict]:
    """One epoch of each peer of ``bp_gpu.bench.peers`` (the benchmark's own loops: plain SGD,
    mean loss, float32, same data, weights and batch order) on W1, W2 and W3, in this process:
    median epoch time over ``TRAINING_REPEATS`` after a warm-up, per step; the epoch losses must agree."""
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
                for _ in range(TRAINING_REPEATS):
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


# -- 11. data-parallel NCCL -------------------------------------------------------------------------
def _reducers(group: Any, engine: Any) -> tuple[Any, Any]:
    """(NCCL all-reduce, MPI on pinned copies) of ``engine``'s gradient over ``group``."""
    from bp_gpu import distributed as D

    return D.make_reducer(group, engine, "nccl"), D.make_reducer(group, engine, "mpi-staged")


def data_parallel() -> dict:
    """bp_gpu.distributed's GPU path on one GPU (a one-rank NCCL communicator; two ranks cannot share
    a GPU): its gpu tests, then per architecture (``DP_ARCHS``) the all-reduce and the step around
    it, and the step's hygiene with the all-reduce inside."""
    import importlib.util

    from bp_gpu.cuda_host import array_module

    if importlib.util.find_spec("mpi4py") is None:
        raise RuntimeError("mpi4py is not importable (pip install 'bp_gpu[mpi]'): the NCCL path was not exercised")
    from cupy.cuda import nccl
    from mpi4py import MPI

    from bp_gpu import MLP
    from bp_gpu import distributed as D
    from bp_gpu.optim import SGD

    xp = array_module()
    out: dict[str, Any] = RESULTS.setdefault("data_parallel", {"nccl_available": bool(nccl.available)})
    if not nccl.available:
        raise RuntimeError("CuPy has no NCCL here (install the nvidia-nccl wheel for this CUDA): the NCCL path "
                           "was not exercised")
    out["nccl_version"] = nccl.get_version()
    out["tests"] = run_gpu_tests("test_gpu_distributed.py")["summary"]
    group = D.ProcessGroup(MPI.COMM_SELF)
    rows = out["steps"] = []
    rng = np.random.default_rng(0)
    for arch in DP_ARCHS:
        sizes, B = ARCHS[arch]
        net = MLP(sizes, backend="cuda", dtype="float32", seed=0)
        opt = SGD(net, 1e-6)
        X = xp.asarray(rng.standard_normal((B, sizes[0])), xp.float32)
        T = xp.asarray(rng.random((B, sizes[-1])) < 0.5, xp.float32)
        nccl_reduce, staged = _reducers(group, net._engine)
        row: dict[str, Any] = {"arch": arch, "batch": B, "params": net.n_params, "grad_MB": net.n_params * 4 / 1e6}
        for name, fn in [("allreduce_nccl", nccl_reduce), ("allreduce_staged", staged),
                         ("step", lambda: net._step(X, T, opt, 1 / B)),
                         ("step_nccl", lambda: net._step(X, T, opt, 1 / B, reduce_grads=nccl_reduce))]:
            t = time_device(fn)
            row[f"{name}_us"], row[f"{name}_host_us"] = t["us"], t["host_us"]
        hook = malloc_counter()
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
    sizes, B = ARCHS[DP_ARCHS[0]]
    net = MLP(sizes, backend="cuda", dtype="float32", seed=0)
    opt = SGD(net, 1e-6)
    reduce, _ = _reducers(group, net._engine)
    batches = _device_batches(4, sizes, B)

    def run(mark: Callable[[], None]) -> None:
        for X, T in batches:
            net._step(X, T, opt, 1 / B, reduce_grads=reduce)
            mark()

    hy = out["hygiene"] = hygiene_case(run, "all", 0)
    reduce.finish()
    log(f"  step with the NCCL all-reduce: {hy['enqueued_during_sleep']}/{hy['steps']} enqueued during a "
        f"{hy['sleep_ms']:.0f} ms sleep, {hy['allocs']} allocations")
    bad = [r["arch"] for r in rows if r["device_allocs_per_step_nccl"] > 0]
    if bad or not (hy["no_host_sync"] and hy["no_extra_allocs"]):
        raise AssertionError(f"data-parallel step hygiene: allocations per step on {bad}, "
                             f"no host sync: {hy['no_host_sync']}, allocations: {hy['allocs']}")
    return out


# -- 12. mixed precision (issue 17; bench/precision_check.py) ---------------------------------------
PRECISION_WORKLOADS: tuple[Any, ...] = ("W2", "W3")  # names in bench/workloads.py, or Workload objects
PRECISION_CHECK = {"check_sizes": (37, 64, 24, 1), "check_rows": 300}  # the gradient check's network


def mixed_precision() -> None:
    """bf16 and tf32 on the device against the CPU's emulation of the rounding contract, how cuBLAS
    rounds TF32, each W3 GEMM's TFLOP/s per precision, and W2/W3 epochs beside PyTorch in the same
    precision (``bp_gpu.bench.precision_check.device_part``, given the part's time but 10 s)."""
    from bp_gpu.bench.precision_check import device_part

    r = RESULTS["mixed_precision"] = device_part(max(1.0, time_left() - 10.0), workloads=PRECISION_WORKLOADS,
                                                 **PRECISION_CHECK)
    errors = r.get("correct", {})
    log(f"  gradient vs the CPU emulation: {', '.join(f'{p} {e:.1e}' for p, e in errors.items()) or 'not run'}; "
        f"cuBLAS TF32 rounds: {', '.join(r.get('tf32_rounding', {}).get('matches', ['not run']))}")
    for name, ok in r.get("targets", {}).items():
        log(f"  target {name}: {'not measured' if ok is None else ('met' if ok else 'MISSED')}")
    if r.get("skipped"):
        log(f"  out of time for: {', '.join(r['skipped'])}")
    bad = {p: e for p, e in errors.items() if not e <= 1e-5}
    if not errors or bad:
        raise AssertionError("mixed-precision gradients on the device differ from the CPU emulation: "
                             f"{bad or 'none run'}")


# -- 13. inside PyTorch (issue 19; bench/torch_module.py) ----------------------------------------------
def inside_pytorch() -> None:
    """bp_gpu.torch.SigmoidMLP on CUDA tensors: its gradients against nn.Sequential's on PyTorch's
    current stream and a side stream, no host sync behind a sleeping kernel, no CuPy pool growth per
    step, and its steps against nn.Sequential and train_step on W1-W3
    (``bp_gpu.bench.torch_module.device_part``, given the part's time but 10 s)."""
    from bp_gpu.bench.torch_module import device_part, format_device_part

    r = RESULTS["inside_pytorch"] = device_part(max(1.0, time_left() - 10.0))
    log(format_device_part(r))
    if not r.get("ok"):
        raise AssertionError(r.get("error") or f"correct {r.get('correct')}, hygiene {r.get('hygiene_ok')}, "
                                               f"skipped {r.get('skipped')}")


# In the order of what we most need to learn. "launch path" is the first to compile: it compiles
# every kernel (18 kernel x dtype pairs took 56-63 s per cc on the 2 shared cores of our CPU-only
# machine, for PTX and SASS; a lent machine's idle cores should take a fraction of that), which
# the parts after it then load from memory.
PARTS = [
    Part("versions", 25, versions, needs_device=False),
    Part("launch path", 60, launch_path),
    Part("cuda vs cpu", 25, cuda_vs_cpu),
    Part("gpu tests", 90, gpu_tests),
    Part("compiled vs eager", 25, compiled_vs_eager),
    Part("capture", 20, capture_errors_and_lifetime),
    Part("host per step", 25, host_per_step),
    Part("step hygiene", 20, step_hygiene),
    Part("kernel bandwidth", 40, kernel_bandwidth),
    Part("training epochs", 40, training_epochs),
    Part("data-parallel NCCL", 25, data_parallel),
]
# The second command of a lease (``--parts second``), after the default run's seven minutes: what
# the newer features need measured. Its parts run in the default run too when time is left.
SECOND_PARTS = [
    Part("mixed precision", 180, mixed_precision),
    Part("inside PyTorch", 90, inside_pytorch),
]


# -- workloads of the parts --------------------------------------------------------------------
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


# -- the table --------------------------------------------------------------------------------------
def print_table() -> None:
    """Everything measured, one screen per part (what a part did not get to is left out)."""
    log("\n=== bp_gpu device check: " + RESULTS.get("device", "?") + " ===")
    lp = RESULTS.get("launch_path")
    if lp:
        occ = lp.get("occupancy") or []
        agree = sum(r["ours"] == r["driver"] for r in occ)
        paths = ", ".join(f"{w} {lp[w]['path']}" for w in ("this process", "fresh process") if w in lp)
        log(f"launch path: {paths}; occupancy table = driver for {agree}/{len(occ)} kernels")
    for dtype in ("float64", "float32"):
        rows = [r for r in RESULTS.get("cuda_vs_cpu") or [] if r["dtype"] == dtype]
        if rows:
            log(f"cuda vs cpu, {dtype}: max loss rel err {max(r['loss_rel_err'] for r in rows):.1e}, "
                f"max grad rel err {max(r['grad_max_rel_err'] for r in rows):.1e} ({len(rows)} problems)")
    if RESULTS.get("gpu_tests"):
        log(f"gpu tests: {RESULTS['gpu_tests']['summary']}")
    cve = RESULTS.get("compiled_vs_eager")
    if cve:
        log("compiled step vs eager train_step: " + ", ".join(
            f"{k} {'bit for bit' if v['losses_equal'] and v['params_equal'] else 'DIFFERENT'}" for k, v in cve.items()))
    cap = RESULTS.get("capture")
    if cap and "handles_left" in cap:
        log(f"capture: {cap['handles_left']} handles and {cap['bytes_left_per_step'] / 2**20:.2f} MiB per compiled "
            f"step left behind; a failed capture raised {cap.get('failed_capture')}")
    hps = RESULTS.get("host_per_step")
    if hps:
        log(f"\n{'host time per step (SGD)':<28}{'arch':<6}{'host us':>9}{'device us':>11}{'wall us':>9}")
        for r in hps:
            if "error" in r:
                log(f"{r['mode']:<28}{r['arch']:<6}  error: {r['error']}")
                continue
            log(f"{r['mode']:<28}{r['arch']:<6}{r['host_us']:>9.1f}{r['device_us']:>11.1f}{r['wall_us']:>9.1f}")
    for name, v in (RESULTS.get("hygiene") or {}).items():
        if "error" in v:
            log(f"step hygiene, {name}: error: {v['error']}")
            continue
        log(f"step hygiene, {name}: {v['enqueued_during_sleep']}/{v['steps']} enqueued during a "
            f"{v['sleep_ms']:.0f} ms kernel ({'no host sync' if v['no_host_sync'] else 'HOST SYNC'}), "
            f"{v['allocs']} device allocations (expected {v['expected_allocs']})")
    if RESULTS.get("copy_GB/s"):
        log(f"\ndevice-to-device copy bandwidth: {RESULTS['copy_GB/s']:.0f} GB/s")
    kernels = RESULTS.get("kernels")
    if kernels:
        log(f"{'kernel':<30}{'arch':<5}{'shape':<16}{'us':>9}{'GB/s':>9}{'of copy':>9}{'host us':>9}")
        for r in kernels:
            if "error" in r:
                log(f"{r['kernel']:<30}{r['arch']:<5}{r['shape']:<16}  error: {r['error']}")
                continue
            flag = "" if r.get("queued", True) else "  (launch-bound: enqueue outlasted the sleep)"
            log(f"{r['kernel']:<30}{r['arch']:<5}{r['shape']:<16}{r['us']:>9.1f}{r['GB/s']:>9.0f}"
                f"{r['frac_copy_bw']:>9.0%}{r['host_us']:>9.1f}{flag}")
    steps = RESULTS.get("training_steps")
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
    log("\nparts:")
    for name, v in RESULTS["parts"].items():
        state = ("ok" if v.get("ok") else "FAILED") if "skipped" not in v else "skipped: " + v["skipped"]
        took = f" ({v['seconds']:.0f} of {v['timeout_s']:.0f} s)" if "seconds" in v else ""
        log(f"  {name:<22}{state}{took}")


# -- the command ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    every = PARTS + SECOND_PARTS
    names = [p.name for p in every]
    ap = argparse.ArgumentParser(description="bp_gpu's check of the CUDA backend on a lent GPU")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"seconds for every part together (default {DEFAULT_BUDGET_S:.0f}, {SECOND_BUDGET_S:.0f} with "
                         "--parts second); a part whose timeout no longer fits is skipped")
    ap.add_argument("--parts", default=",".join(names),
                    help="comma-separated parts to run, in their order (default: all; 'second': the second "
                         "command of a lease, " + ", ".join(p.name for p in SECOND_PARTS) + "): " + ", ".join(names))
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.parts.split(",") if s.strip()]
    second = chosen == ["second"]
    if second:
        chosen = [p.name for p in SECOND_PARTS]
    if args.budget is None:
        args.budget = SECOND_BUDGET_S if second else DEFAULT_BUDGET_S
    unknown = [s for s in chosen if s not in names]
    if unknown:
        ap.error(f"no part named {', '.join(map(repr, unknown))}; the parts: {', '.join(names)}")
    if args.budget <= RESERVE_S:
        ap.error(f"--budget must be more than {RESERVE_S:.0f} s (kept for the table); got {args.budget:g}")
    args.parts = [p for p in every if p.name in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    from bp_gpu.backends import cuda_status

    ok, why = cuda_status()
    RESULTS["device"] = why
    RESULTS["budget_s"] = args.budget
    log(f"bp_gpu device check: {why}; budget {args.budget:.0f} s, planned {planned_seconds(args.parts):.0f} s")
    t0 = time.monotonic()
    run_parts(args.parts, args.budget, ok)
    RESULTS["seconds"] = round(time.monotonic() - t0, 1)
    if not ok:
        log("No usable CUDA device: every GPU part is skipped (nothing was measured).")
        RESULTS["skipped"] = why
        write_json()
        return 2
    print_table()
    write_json()
    return 0 if all(v.get("ok") for v in RESULTS["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
