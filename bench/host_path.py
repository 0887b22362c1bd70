"""Host path of an eager CUDA training step, measured without a GPU: what our Python does per step,
and what that costs the CPU on a device, estimated from published per-call costs.

The CUDA backend's host code runs unchanged in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
NumPy standing in for CuPy, as ``tests/sim`` run it), with every call that would reach the GPU
replaced by a recorder that counts it and does nothing (or, for array-module calls, the NumPy
equivalent, timed apart):

- kernel launches: prepared (``bp_gpu.kernels._launch.prepared``: one ``cuLaunchKernel`` on a
  device) or through Numba's dispatcher (``kernel[grid, block, stream](*args)``), with their array
  arguments; preparations made inside a step (a prepared launch built again for a new input);
- GEMMs: ``PreparedGemm`` calls (one ``cublasGemmEx`` through ctypes) or ``cupy.matmul``;
- array-module calls: every call the engine makes through its ``xp`` (CuPy on a device) and every
  method call on a device array, split into calls that enqueue device work or allocate (a CuPy
  kernel launch) and calls that only build a view or return their input;
- CuPy stream queries, CUDA graph launches, and (in code from before prepared launches) the launch
  helpers whose device path does work the simulator skips.

So the counts are exactly those of a step on a device, and the "Python" column is our own code: the
wall time of a step minus the time inside the recorded calls, minus the recorder's own per-call
overhead (calibrated). The estimate adds the published or estimated cost of each recorded call
(``COSTS``, each with its source; estimates say so).

Scenarios on W1 (``[28, 64, 64, 1]``, float32, batch 1024, SGD unless named): ``MLP.train_step`` in
a user's loop (a new batch array each step), the classifier's epoch loop (``bp_gpu.train.run_epoch``
over resident data: an epoch of 256 batches in a fixed shuffled order, per-epoch work spread over
its steps; the shuffle itself, a NumPy permutation per epoch, is timed apart) and a compiled step
(``MLP.compile_step``; on a device a CUDA graph: here its launch is recorded). ``--tree LABEL=PATH``
measures another checkout of this repository (e.g. an older commit from ``git worktree add``), in a
process of its own.

Run: ``python -m bp_gpu.bench.host_path [--tree before=/tmp/before] [--json FILE]`` or
``bp-gpu bench --host-path``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

SIZES = (28, 64, 64, 1)
BATCH = 1024
EPOCH_BATCHES = 256  # W1's epoch in bench/workloads.py: 262,144 rows
USER_BATCHES = 8  # distinct batch arrays a user's loop cycles through (more than any cache of inputs)
TARGET_US = 120.0  # issue 11: the eager W1 step's host time on a device

# Host microseconds per recorded call on a device: (cost, source). "estimate" marks numbers read
# off a code path or assumed rather than measured; the table printed with the results repeats them.
COSTS: dict[str, tuple[float, str]] = {
    "dispatcher_launch": (6.6, "numba-cuda dispatcher launch, no arguments (NVIDIA/numba-cuda PR #288, gmarkall's "
                               "timings on main, 2025-06-11)"),
    "dispatcher_array": (3.5, "numba-cuda dispatcher, per array argument (same source)"),
    "prepared_launch": (3.0, "estimate: our closure and the cuda.bindings cuLaunchKernel wrapper ~0.5-1 us (code "
                             "path, docs in kernels/_launch.py), the driver's cuLaunchKernel ~2 us (a kernel launched "
                             "through a thin ccall wrapper, JuliaGPU/CUDA.jl#307)"),
    "preparation_array": (5.0, "estimate: a prepared launch built again inside a step, per array argument: "
                               "Numba's typing and _prepare_args packing (an eager launcher costs ~5 us + 5 us per "
                               "array; its ~5 us of our Python is in the Python column)"),
    "cublas_host": (4.0, "estimate: cuBLAS's own host time for one GEMM once its kernel choice is cached "
                         "(~5 us for a cuBLAS call through a thin ccall wrapper, JuliaGPU/CUDA.jl#307; without the "
                         "cache a heuristics query takes tens of us, cuBLAS docs, cuBLASLt 'Heuristics Cache')"),
    "prepared_gemm_python": (2.0, "estimate, used where it cannot be measured (no C compiler): PreparedGemm's "
                                  "call and the ctypes call with 19 arguments"),
    "cupy_call": (8.0, "a CuPy call that launches a kernel or allocates (issue 11's figure)"),
    "cupy_view": (1.5, "estimate: a CuPy call that only makes a view or returns its input (a Cython method "
                       "building an ndarray; cupy/cupy#2271 found reshape 3.3x NumPy's)"),
    "stream_query": (0.5, "estimate: cupy.cuda.get_current_stream() (Cython, thread-local read)"),
    "graph_launch": (5.0, "estimate: CuPy Graph.launch and cudaGraphLaunch"),
    # Launch helpers of the code before prepared launches, whose device path does what the
    # simulator skips (the simulator returns early): Numba's get_current_device() ~3.6 us (issue 11,
    # measured with the driver calls stubbed), a CuPy stream query, a view-cache key per array.
    "helper.max_blocks": (3.6, "before: max_blocks() -> Numba get_current_device() on a device (issue 11)"),
    "helper.workspace": (4.1, "before: workspace() -> get_current_device() + a stream query"),
    "helper.stream": (0.5, "before: stream() -> a stream query + dict lookup"),
    "helper.arg": (0.4, "estimate, before: arg() -> the view-cache key (pointer, shape, strides, dtype) per array"),
}


# ------------------------------------------------------------------------------------------------
# The recorder (runs in the simulator process)


class Recorder:
    """Counts of recorded calls and the time spent inside them (the recorder's own bookkeeping
    included, so only the call into a wrapper is left outside: calibrated by ``_calibrate``)."""

    def __init__(self) -> None:
        self.reset()
        self.depth = 0

    def reset(self) -> None:
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.arrays: dict[tuple[str, str], int] = defaultdict(int)
        self.paths: dict[str, int] = defaultdict(int)  # recorded calls per wrapper kind (overhead calibration)
        self.inside = 0.0

    def call(self, path: str, kind: Any, name: str, n_arrays: int, fn: Any, args: tuple = (),
             kwargs: dict | None = None, device: bool = False) -> Any:
        """Run ``fn(*args, **kwargs)``, recording it unless it is made inside another recorded call.
        ``kind``: a string, or ``kind(result, args)`` deciding it from the call; ``device``: return
        an array result as a device array stand-in."""
        t0 = time.perf_counter()
        if self.depth:
            result = fn(*args, **(kwargs or {}))
            return _device(result) if device else result
        self.depth += 1
        try:
            result = fn(*args, **(kwargs or {}))
        finally:
            self.depth -= 1
        if not isinstance(kind, str):
            kind = kind(result, args)
        if device:
            result = _device(result)
        key = (kind, name)
        self.counts[key] += 1
        self.arrays[key] += n_arrays
        self.paths[path] += 1
        self.inside += time.perf_counter() - t0
        return result


REC = Recorder()


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _indexing_kind(result: Any, args: tuple) -> str:
    """A basic slice makes a view; any other key reads or gathers data."""
    key = args[1]
    basic = isinstance(key, (slice, type(Ellipsis))) or (
        isinstance(key, tuple) and all(isinstance(k, (slice, type(Ellipsis))) for k in key))
    return "cupy.view" if basic else "cupy.work"


def _module_call_kind(result: Any, args: tuple) -> str:
    """A call on device arrays that returns one of them (asarray, ascontiguousarray of an array
    already right) makes at most a view; anything else moves or makes data."""
    host_input = any(isinstance(a, np.ndarray) and not isinstance(a, RecordedArray) for a in args)
    same = any(result is a or (isinstance(a, np.ndarray) and isinstance(result, np.ndarray)
                               and np.shares_memory(a, result)) for a in args)
    return "cupy.view" if same and not host_input else "cupy.work"


def _plain(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, RecordedArray) else x


def _ufunc(ufunc: Any, method: str, inputs: tuple, kwargs: dict) -> Any:
    inputs = tuple(_plain(x) for x in inputs)
    if "out" in kwargs:
        kwargs = dict(kwargs, out=tuple(_plain(x) for x in kwargs["out"]))
    return getattr(ufunc, method)(*inputs, **kwargs)


class RecordedArray(np.ndarray):
    """A device array stand-in: a NumPy array whose method calls are recorded as CuPy calls."""

    def __getitem__(self, key: Any) -> Any:
        return REC.call("method.getitem", _indexing_kind, "__getitem__", 0, _getitem, (self, key))

    def __setitem__(self, key: Any, value: Any) -> None:
        REC.call("method.setitem", "cupy.work", "__setitem__", 0, _setitem, (self, key, value))

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        return REC.call("method.copy", "cupy.work", "copy", 0, _copy, (self, *args), kwargs)

    def reshape(self, *args: Any, **kwargs: Any) -> Any:
        return REC.call("method.reshape", "cupy.view", "reshape", 0, _reshape, (self, *args), kwargs)

    def get(self) -> np.ndarray:
        """CuPy's device -> host copy."""
        return REC.call("method.get", "cupy.work", "get", 0, np.array, (self.view(np.ndarray),))

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return REC.call("method.ufunc", "cupy.work", ufunc.__name__, 0, _ufunc, (ufunc, method, inputs, kwargs),
                        device=True)


_getitem, _setitem = np.ndarray.__getitem__, np.ndarray.__setitem__
_copy, _reshape = np.ndarray.copy, np.ndarray.reshape


def _device(x: Any) -> Any:
    """x as a device array stand-in (arrays only)."""
    if isinstance(x, np.ndarray) and not isinstance(x, RecordedArray):
        return x.view(RecordedArray)
    return x


class RecordedXP:
    """The engine's array module: NumPy, with every function call recorded as a CuPy call."""

    __name__ = "cupy (recorded)"  # not "cupy": the epoch loop must not take CuPy-only paths here

    def __getattr__(self, name: str) -> Any:  # first use of a name only: the wrapper is then an attribute
        if name == "ndarray":
            return RecordedArray  # the device array type (``type(x) is xp.ndarray``)
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr
        if name == "matmul":
            def fn(a: Any, b: Any, out: Any = None) -> Any:
                REC.call("xp", "gemm.cupy", "cupy.matmul", 3, _noop)
                return out
        else:
            def fn(*args: Any, **kwargs: Any) -> Any:
                return REC.call("xp", _module_call_kind, name, 0, attr, args, kwargs, device=True)
        setattr(self, name, fn)
        return fn


class RecordedLaunch:
    """A prepared launch whose call is recorded instead of run (its ``rebind`` is the real one)."""

    def __init__(self, real: Any, name: str, n_arrays: int) -> None:
        self.real, self.name, self.n_arrays = real, name, n_arrays
        rebind = getattr(real, "rebind", None)
        if rebind is not None:
            self.rebind = rebind

    def __call__(self) -> None:
        REC.call("launch", "launch.prepared", self.name, self.n_arrays, _noop)


class RecordedGraph:
    """A captured step whose replay is recorded (``bp_gpu.cuda_graph.CapturedStep``'s interface)."""

    def launch(self) -> None:
        REC.call("launch", "graph", "cudaGraphLaunch", 0, _noop)


def _n_arrays(args: Any) -> int:
    return sum(isinstance(a, np.ndarray) for a in args)


def install() -> dict[str, Any]:
    """Patch the simulator process: launches, GEMMs, the array module and stream queries are
    recorded. Returns what the scenarios need to know about the code under test."""
    from bp_gpu.kernels import _launch
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    from bp_gpu import _validate, cuda_host

    def configure(kernel: Any, config: Any) -> Any:
        name = kernel.fn.__name__

        def launch(*args: Any) -> None:
            REC.call("launch", "launch.dispatcher", name, _n_arrays(args), _noop)

        return launch

    FakeCUDAKernel.__getitem__ = configure

    # A device's geometry (an H100: 132 SMs, 256-thread blocks, at most 8 blocks per SM), not the
    # simulator's tiny one: the old two-stage reductions launched their second stage only when the
    # grid had several rows of blocks. Nothing is simulated, so the geometry costs nothing here.
    _launch.THREADS, _launch.MAX_TX, _launch._SIM_MAX_BLOCKS = 256, 32, 8 * 132
    info: dict[str, Any] = {"prepared_launches": hasattr(_launch, "prepared")}
    if info["prepared_launches"]:
        real_prepared = _launch.prepared

        def prepared(dispatcher: Any, kernel: Any, grid: Any, block: Any, args: Any, owners: Any) -> Any:
            name = dispatcher.fn.__name__
            n = _n_arrays(args)
            real = REC.call("prepare", "prepare", name, n, real_prepared, (dispatcher, kernel, grid, block, args,
                                                                          owners))
            return RecordedLaunch(real, name, n)

        _launch.prepared = prepared
    else:  # the old launchers: count the helpers that do device-only work (COSTS "helper.*")
        for name in ("max_blocks", "workspace", "stream", "arg"):
            real = getattr(_launch, name)

            def helper(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
                return REC.call("helper", "helper", _name, 0, _real, args, kwargs)

            setattr(_launch, name, helper)
    if hasattr(cuda_host, "_host_matmul"):  # the simulator's stand-in for a PreparedGemm call
        cuda_host._host_matmul = lambda a, b, out: REC.call("gemm", "gemm.prepared", "cublasGemmEx", 3, _noop)
    steps = type(cuda_host.CUDA_STEPS)
    if hasattr(steps, "stream_key"):
        real_key = steps.stream_key

        def stream_key(self: Any) -> Any:
            return REC.call("stream", "stream", "get_current_stream", 0, real_key, (self,))

        steps.stream_key = stream_key
    xp = RecordedXP()
    cuda_host.array_module = lambda: xp
    real_module = _validate.array_module
    _validate.array_module = lambda x: xp if isinstance(x, RecordedArray) else real_module(x)
    return info


# ------------------------------------------------------------------------------------------------
# Scenarios


def _calibrate(reps: int = 20000) -> dict[str, float]:
    """Seconds each wrapper kind adds per recorded call outside its timed region (subtracted from
    the Python column): the call into the wrapper and the bookkeeping after the inner call."""
    a = np.zeros(4).view(RecordedArray)
    xp = RecordedXP()
    launch = RecordedLaunch(None, "calibration", 0)
    b = np.zeros(4).view(RecordedArray)
    cases = {
        "launch": launch,
        "prepare": lambda: REC.call("prepare", "calibration", "x", 0, _noop),
        "gemm": lambda: REC.call("gemm", "calibration", "x", 0, _noop),
        "stream": lambda: REC.call("stream", "calibration", "x", 0, _noop),
        "helper": lambda: REC.call("helper", "calibration", "x", 0, _noop),
        "xp": lambda: xp.ascontiguousarray(a),
        "method.getitem": lambda: a[0:2],
        "method.setitem": lambda: b.__setitem__(slice(0, 1), 0),
        "method.copy": lambda: a.copy(),
        "method.reshape": lambda: a.reshape(2, 2),
        "method.get": lambda: a.get(),
        "method.ufunc": lambda: np.add(b, 1, out=b),
    }
    out = {}
    for path, fn in cases.items():
        best = float("inf")
        for _ in range(5):
            REC.reset()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            best = min(best, (time.perf_counter() - t0 - REC.inside) / reps)
        out[path] = max(best, 0.0)
    REC.reset()
    return out


def _timed(run: Any, steps: int, repeats: int, overhead: dict[str, float]) -> dict[str, Any]:
    """Counts per step and our Python microseconds per step (least over repeats) of ``run()``,
    which takes ``steps`` steps."""
    python_us = []
    for _ in range(repeats):
        REC.reset()
        t0 = time.perf_counter()
        run()
        wall = time.perf_counter() - t0
        rec_overhead = sum(overhead.get(p, 0.0) * n for p, n in REC.paths.items())
        python_us.append((wall - REC.inside - rec_overhead) / steps * 1e6)
        counts = {f"{k}|{n}": v / steps for (k, n), v in sorted(REC.counts.items())}
        arrays = {f"{k}|{n}": v / steps for (k, n), v in sorted(REC.arrays.items()) if v}
    # The least time over repeats: the code is deterministic, so slower repeats measure other
    # processes (Python's timeit documentation recommends the minimum for the same reason).
    return {"python_us": min(python_us), "python_us_median": statistics.median(python_us), "counts": counts,
            "arrays": arrays}


def _optimizer(net: Any, name: str) -> Any:
    import bp_gpu.optim as O

    return {"sgd": lambda: O.SGD(net, 0.1), "adam": lambda: O.Adam(net, 1e-3),
            "lamb": lambda: O.LAMB(net, 1e-3, weight_decay=0.01)}[name]()


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, SIZES[0]), dtype=np.float32)
    T = (rng.random((n, SIZES[-1])) < 0.5).astype(np.float32)
    return X, T


def run_scenarios(repeats: int) -> dict[str, Any]:
    """Every scenario the code under test has (run in the simulator, after ``install``)."""
    info = install()
    import bp_gpu
    from bp_gpu import train as T

    overhead = _calibrate()
    results: dict[str, Any] = {"recorder_overhead_us": {k: v * 1e6 for k, v in overhead.items()},
                               "prepared_launches": info["prepared_launches"],
                               "prepared_gemm_us": measure_prepared_gemm(), "scenarios": {}}
    out = results["scenarios"]
    X, Tt = _data(BATCH * EPOCH_BATCHES)
    Xd = [_device(X[k * BATCH:(k + 1) * BATCH].copy()) for k in range(USER_BATCHES)]
    Td = [_device(Tt[k * BATCH:(k + 1) * BATCH].copy()) for k in range(USER_BATCHES)]
    has_step = hasattr(bp_gpu.MLP, "train_step")

    if has_step:
        for name in ("sgd", "adam", "lamb"):
            net = bp_gpu.MLP(SIZES, backend="cuda", dtype="float32", seed=0)
            opt = _optimizer(net, name)

            def user_loop(steps: int = 2 * USER_BATCHES, net: Any = net, opt: Any = opt) -> None:
                for k in range(steps):
                    net.train_step(Xd[k % USER_BATCHES], Td[k % USER_BATCHES], opt)

            user_loop()
            out[f"train_step {name}"] = _timed(user_loop, 2 * USER_BATCHES, repeats, overhead)

        net = bp_gpu.MLP(SIZES, backend="cuda", dtype="float32", seed=0)
        opt = _optimizer(net, "sgd")
        step = net.compile_step(opt, BATCH)
        step._on_gpu, step._graph = True, RecordedGraph()  # replay = one graph launch, as on a device

        def replay(steps: int = 2 * USER_BATCHES) -> None:
            for k in range(steps):
                step(Xd[k % USER_BATCHES], Td[k % USER_BATCHES])

        replay()
        out["compiled step sgd"] = _timed(replay, 2 * USER_BATCHES, repeats, overhead)

    net = bp_gpu.MLP(SIZES, backend="cuda", dtype="float32", seed=0)
    order = np.random.default_rng(1).permutation(X.shape[0])
    import inspect

    if "source" in inspect.signature(T.run_epoch).parameters:
        opt = _optimizer(net, "sgd")
        source = T.ArraySource(net._engine, X, Tt, BATCH, "device")

        def epoch() -> None:
            T.run_epoch(net, opt, source, None, order=order)
    else:  # 464b266 and before: run_epoch(engine, optimizer, batches, order, ...), called by train()
        from bp_gpu.optim import Optimizer

        engine = net._engine
        opt = Optimizer(engine, "sgd", 0.1)
        batches = T.ResidentBatches(engine.xp, X, Tt, BATCH)
        acc = engine.xp.zeros(2, dtype=np.float64)

        def epoch() -> None:
            T.run_epoch(engine, opt, batches, order, 1, BATCH, acc)

    epoch()
    out["run_epoch step sgd"] = _timed(epoch, EPOCH_BATCHES, max(5, repeats // 3), overhead)
    # The epoch's shuffle (a NumPy permutation on the host, so both backends see the same batches),
    # apart: a per-epoch cost, the same before and after.
    rng = np.random.default_rng(2)
    best = min(_seconds(lambda: rng.permutation(X.shape[0])) for _ in range(5))
    results["shuffle_us_per_step"] = best / EPOCH_BATCHES * 1e6
    return results


def _seconds(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# Estimates (pure: tested without the simulator)


def estimate(counts: dict[str, float], arrays: dict[str, float], python_us: float,
             costs: dict[str, tuple[float, str]] = COSTS) -> dict[str, float]:
    """Host microseconds per step on a device, by part: our Python plus each recorded call's cost."""
    c = {k: v[0] for k, v in costs.items()}
    parts = defaultdict(float)
    parts["our Python"] = python_us
    for key, n in counts.items():
        kind, name = key.split("|", 1)
        a = arrays.get(key, 0.0)
        if kind == "launch.prepared":
            parts["kernel launches"] += n * c["prepared_launch"]
        elif kind == "launch.dispatcher":
            parts["kernel launches"] += n * c["dispatcher_launch"] + a * c["dispatcher_array"]
        elif kind == "prepare":
            parts["preparations in the step"] += a * c["preparation_array"]
        elif kind == "gemm.prepared":
            parts["GEMMs"] += n * (c["prepared_gemm_python"] + c["cublas_host"])
        elif kind == "gemm.cupy":
            parts["GEMMs"] += n * (c["cupy_call"] + c["cublas_host"])
        elif kind == "cupy.work":
            parts["CuPy calls"] += n * c["cupy_call"]
        elif kind == "cupy.view":
            parts["CuPy calls"] += n * c["cupy_view"]
        elif kind == "stream":
            parts["stream queries"] += n * c["stream_query"]
        elif kind == "graph":
            parts["graph launch"] += n * c["graph_launch"]
        elif kind == "helper":
            parts["launch helpers (device-only work)"] += n * c[f"helper.{name}"]
        else:
            raise ValueError(f"no cost for recorded call {key!r}")
    parts["total"] = sum(v for k, v in parts.items())
    return dict(parts)


def summarize(counts: dict[str, float], arrays: dict[str, float]) -> dict[str, float]:
    """The budget's columns: launches (prepared / dispatcher), array arguments, GEMMs, CuPy calls."""
    def total(prefix: str, table: dict[str, float] = counts) -> float:
        return sum(v for k, v in table.items() if k.startswith(prefix + "|"))

    return {
        "launches prepared": total("launch.prepared"),
        "launches dispatcher": total("launch.dispatcher"),
        "array args": total("launch.prepared", arrays) + total("launch.dispatcher", arrays),
        "preparations": total("prepare"),
        "GEMMs": total("gemm.prepared") + total("gemm.cupy"),
        "CuPy calls (work)": total("cupy.work"),
        "CuPy calls (view)": total("cupy.view"),
        "stream queries": total("stream"),
        "graph launches": total("graph"),
    }


_STUB_C = r"""
#include <stddef.h>
long long rec[19];
double scalars[2];
int cublasGemmEx(void *h, int ta, int tb, int m, int n, int k, const void *al, const void *A, int at,
                 int lda, const void *B, int bt, int ldb, const void *be, void *C, int ct, int ldc,
                 int comp, int algo) {
    long long v[19] = {(long long)h, ta, tb, m, n, k, (long long)al, (long long)A, at, lda,
                       (long long)B, bt, ldb, (long long)be, (long long)C, ct, ldc, comp, algo};
    for (int i = 0; i < 19; i++) rec[i] = v[i];
    scalars[0] = at == 0 ? *(const float *)al : *(const double *)al;
    scalars[1] = at == 0 ? *(const float *)be : *(const double *)be;
    return 0;
}
int cublasSetStream_v2(void *h, void *s) { return 0; }
int cublasSetWorkspace_v2(void *h, void *w, size_t n) { return 0; }
"""


class FakeDeviceArray:
    """What ``PreparedGemm`` reads of a CuPy array: shape, strides, dtype, flags, ``data.ptr``."""

    def __init__(self, a: np.ndarray, ptr: int) -> None:
        self._a, self.shape, self.strides, self.dtype, self.flags = a, a.shape, a.strides, a.dtype, a.flags
        self.data = SimpleNamespace(ptr=ptr)

    @property
    def T(self) -> FakeDeviceArray:
        return FakeDeviceArray(self._a.T, self.data.ptr)


_stub: ctypes.CDLL | None = None


def _stub_library() -> ctypes.CDLL:
    """The C stand-in for libcublas, built once per process. Its file stays until the process exits:
    ``cublas_gemm._libcublas`` finds the library by its path in /proc/self/maps."""
    global _stub
    if _stub is None:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("no C compiler (cc) to build the cuBLAS stand-in")
        d = Path(tempfile.mkdtemp(prefix="bp_gpu_stub_"))
        atexit.register(shutil.rmtree, d, True)
        src, path = d / "stub.c", d / "libcublas.so.99"
        src.write_text(_STUB_C)
        proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(path), str(src)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building the cuBLAS stand-in failed: {proc.stderr.strip()}")
        _stub = ctypes.CDLL(str(path))
    return _stub


@contextlib.contextmanager
def stub_cublas() -> Iterator[ctypes.CDLL]:
    """``bp_gpu.cublas_gemm`` running on stand-ins, without CuPy or a GPU: a C library named
    ``libcublas.so`` whose ``cublasGemmEx`` records its arguments (``rec``, 19 values, and
    ``scalars``: alpha and beta) and returns success, and a ``cupy`` module with what the GEMM code
    calls (a stream with pointer 0x77, a cc 9.0 device, CuPy's default compute type). Yields the
    library; needs a C compiler (``cc``): raises RuntimeError without one."""
    from bp_gpu import cublas_gemm

    lib = _stub_library()
    addresses = iter(range(0x7F0000000000, 0x7F0100000000, 0x100000))
    cupy = types.ModuleType("cupy")
    cupy.uint8 = np.uint8
    cupy.empty = lambda shape, dtype=None: FakeDeviceArray(np.empty(0, np.uint8), next(addresses))
    cupy.cuda = SimpleNamespace(
        device=SimpleNamespace(get_cublas_handle=lambda: None),
        get_current_stream=lambda: SimpleNamespace(ptr=0x77),
        Device=lambda *a: SimpleNamespace(id=0, compute_capability="90"),
    )
    cupy._core = SimpleNamespace(get_compute_type=lambda dtype: 0)  # CuPy's default
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = SimpleNamespace(create=lambda: 0x5EED, destroy=lambda h: None)
    fakes = {"cupy": cupy, "cupy_backends": types.ModuleType("cupy_backends"),
             "cupy_backends.cuda": types.ModuleType("cupy_backends.cuda"),
             "cupy_backends.cuda.libs": libs, "cupy_backends.cuda.libs.cublas": libs.cublas}
    saved = {k: sys.modules.get(k) for k in fakes}
    state = (cublas_gemm._lib, dict(cublas_gemm._handles))
    sys.modules.update(fakes)
    cublas_gemm._lib = None
    cublas_gemm._handles.clear()
    try:
        yield lib
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        cublas_gemm._lib = state[0]
        cublas_gemm._handles.clear()
        cublas_gemm._handles.update(state[1])


def measure_prepared_gemm() -> float | None:
    """Microseconds of one call of the code under test's ``PreparedGemm`` (``X @ W^T`` with X a
    slot, W1's first layer), on ``stub_cublas``: our Python and the ctypes call into a
    ``cublasGemmEx`` that returns at once. None when it cannot be measured here (no C compiler, or
    no ``bp_gpu.cublas_gemm`` in that code)."""
    try:
        from bp_gpu.cublas_gemm import PreparedGemm
        from bp_gpu.plan import X as X_SLOT
    except ImportError:
        return None
    try:
        with stub_cublas():
            W = FakeDeviceArray(np.empty((64, SIZES[0]), np.float32), 0x7E0000000000)
            out = FakeDeviceArray(np.empty((BATCH, 64), np.float32), 0x7E0000100000)
            x = FakeDeviceArray(np.empty((BATCH, SIZES[0]), np.float32), 0x7E0000200000)
            gemm = PreparedGemm(X_SLOT, W.T, out)
            best, reps = float("inf"), 20000
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(reps):
                    gemm(x)
                best = min(best, (time.perf_counter() - t0) / reps)
            return best * 1e6
    except RuntimeError:
        return None


# ------------------------------------------------------------------------------------------------
# Processes and the report


def _shim(tree: Path) -> str:
    """A directory that makes ``bp_gpu`` (with ``bp_gpu.kernels``) importable from a checkout, as
    an install does (``package-dir`` in pyproject.toml): symlinks, no copy."""
    d = Path(tempfile.mkdtemp(prefix="bp_gpu_tree_"))
    pkg = d / "bp_gpu"
    pkg.mkdir()
    for entry in (tree / "bp_gpu").iterdir():
        (pkg / entry.name).symlink_to(entry)
    (pkg / "kernels").symlink_to(tree / "kernels")
    return str(d)


def run_child(tree: Path | None, repeats: int, timeout: float = 900) -> dict[str, Any]:
    """Run the scenarios in a fresh simulator process, on the installed bp_gpu or on ``tree``."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    shim = None
    if tree is not None:
        shim = _shim(tree)
        env["PYTHONPATH"] = shim + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["BP_GPU_HOST_PATH_TREE"] = str(tree)
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--repeats", str(repeats)],
                              env=env, capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir())
    finally:
        if shim:
            shutil.rmtree(shim, ignore_errors=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"host-path child ({tree or 'installed bp_gpu'}) exited with {proc.returncode}:\n{tail}")
    return json.loads(lines[-1])


def report(runs: dict[str, dict[str, Any]], costs: dict[str, tuple[float, str]]) -> dict[str, Any]:
    """Rows (per tree and scenario) with counts, Python time and the estimate. A tree's own
    ``PreparedGemm`` call, measured in its process, replaces the estimate of it."""
    rows = []
    for label, res in runs.items():
        tree_costs = dict(costs)
        gemm_us = res.get("prepared_gemm_us")
        if gemm_us is not None:
            tree_costs["prepared_gemm_python"] = (gemm_us, "measured")
        for scenario, r in res["scenarios"].items():
            rows.append({"tree": label, "scenario": scenario, **summarize(r["counts"], r["arrays"]),
                         "python_us": r["python_us"], "prepared_gemm_us": gemm_us,
                         "estimate": estimate(r["counts"], r["arrays"], r["python_us"], tree_costs),
                         "counts": r["counts"], "arrays": r["arrays"]})
    return {"rows": rows, "costs": {k: {"us": v[0], "source": v[1]} for k, v in costs.items()},
            "target_us": TARGET_US,
            "shuffle_us_per_step": {label: res.get("shuffle_us_per_step") for label, res in runs.items()}}


def format_report(rep: dict[str, Any]) -> str:
    head = (f"{'tree':<8}{'scenario':<20}{'launch prep/disp':>17}{'arrays':>7}{'GEMMs':>6}{'CuPy w/v':>10}"
            f"{'prep':>5}{'Python us':>10}{'est. host us':>13}")
    lines = [f"Host path per step, W1 {list(SIZES)} batch {BATCH}, float32 (simulator + recorder; estimate on a "
             f"device from the per-call costs below)", head, "-" * len(head)]
    for r in rep["rows"]:
        est = r["estimate"]["total"]
        mark = " <= target" if r["scenario"].startswith(("train_step sgd", "run_epoch")) and est <= TARGET_US else ""
        lines.append(
            f"{r['tree']:<8}{r['scenario']:<20}{r['launches prepared']:>8.1f} /{r['launches dispatcher']:>6.1f}"
            f"{r['array args']:>9.1f}{r['GEMMs']:>6.1f}{r['CuPy calls (work)']:>5.1f}/{r['CuPy calls (view)']:<4.1f}"
            f"{r['preparations']:>5.1f}{r['python_us']:>10.1f}{est:>13.1f}{mark}")
    shuffle = {t: v for t, v in rep.get("shuffle_us_per_step", {}).items() if v is not None}
    if shuffle:
        n = BATCH * EPOCH_BATCHES
        lines.append(f"run_epoch rows exclude the epoch's shuffle (rng.permutation of {n:,} rows on the host, once "
                     "per epoch): " + ", ".join(f"{t} {v:.1f}" for t, v in shuffle.items())
                     + " us per step more")
    lines.append("\nEstimate by part (us per step):")
    for r in rep["rows"]:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r["estimate"].items() if k != "total" and v)
        lines.append(f"  {r['tree']:<8}{r['scenario']:<20}{parts}")
    lines.append(f"\nTarget for an eager W1 step: <= {TARGET_US:.0f} us. Per-call costs (us):")
    for k, v in rep["costs"].items():
        lines.append(f"  {k:<22}{v['us']:>5.1f}  {v['source']}")
    measured = {r["tree"]: r["prepared_gemm_us"] for r in rep["rows"] if r["prepared_gemm_us"] is not None}
    if measured:
        lines.append("  prepared_gemm_python, measured in each tree's process (PreparedGemm.__call__ and the ctypes "
                     "call into a C stand-in of cublasGemmEx that returns at once): "
                     + ", ".join(f"{t} {v:.2f}" for t, v in measured.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="host_path", description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                   help="also measure the checkout at PATH (e.g. a git worktree of an older commit)")
    p.add_argument("--label", default="now", help="label of the installed bp_gpu's row (default 'now')")
    p.add_argument("--repeats", type=int, default=30,
                   help="timed repeats per scenario, the least time kept (default 30; the epoch loop a third)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
            sys.path.pop(0)  # bench/ itself must not shadow anything
        if os.environ.get("BP_GPU_HOST_PATH_TREE"):
            # Only the tree's own modules: an editable install's finder (setuptools, on
            # sys.meta_path) would otherwise supply modules the tree lacks from the installed checkout.
            sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
        print(json.dumps(run_scenarios(args.repeats)))
        return 0
    runs = {}
    for spec in args.tree:
        label, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--tree takes LABEL=PATH; got {spec!r}")
        runs[label] = run_child(Path(path).resolve(), args.repeats)
    runs[args.label] = run_child(None, args.repeats)
    rep = report(runs, COSTS)
    rep["runs"] = runs
    print(format_report(rep))
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(rep, indent=2))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
