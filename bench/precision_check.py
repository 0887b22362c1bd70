"""The mixed-precision part of the device check (issue 17): ``device_part(budget_s) -> dict``.

What a device must show, in the order we most need to learn it, each step skipped (with the reason)
once ``budget_s`` is spent:

1. ``correct``: the bf16 and tf32 gradient of a small network on the device against the CPU
   backend's emulation of the rounding contract (relative error ~1e-6 is the summation order).
2. ``tf32_rounding``: how cuBLAS's ``CUBLAS_COMPUTE_32F_FAST_TF32`` rounds float32 operands, read
   from a GEMM of chosen values by the identity (every output is one operand times 1): truncation,
   round to nearest with ties away from zero (``cvt.rna.tf32.f32``), or ties to even (our
   ``bp_gpu.precision.round_tf32``). The contract and the CPU reference assume the last; the others
   would mean tf32 on CUDA differs from the reference in the operands' last bit.
3. ``gemms``: every GEMM of a W3 step (forward, weight gradient, delta) in each precision through
   ``bp_gpu.cublas_gemm.PreparedGemm``: time, TFLOP/s and the fraction of the device's dense peak in
   that precision; ``tensor_cores``: the float32 time over the bf16 and tf32 times (several times
   faster only on the tensor-core path).
4. ``epochs``: W2 and W3 epochs of ``MLP.compile_step`` (CUDA graphs) in each precision beside
   PyTorch eager in the same precision (float32; ``allow_tf32``; ``torch.autocast`` bf16) and
   ``torch.compile`` (bp_gpu.bench.peers), and ``targets``: bf16 >= 1.2x autocast eager and >=
   ``torch.compile`` bf16 on W2 and W3, W3's bf16 GEMMs >= 60% of the bf16 dense peak.

Without a GPU the same code runs in Numba's simulator on tiny sizes (``tests/sim``): the GEMMs are
the simulator's stand-in and PyTorch's CUDA peers are skipped as unavailable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

PRECISIONS = ("highest", "tf32", "bf16")
# Dense peak TFLOP/s by device name and precision (vendor data sheets, SXM parts, no sparsity):
# H100/H200 SXM 67 (FP32), 495 (TF32), 989 (BF16); A100 19.5, 156, 312.
PEAKS = {"H200": (67.0, 495.0, 989.0), "H100": (67.0, 495.0, 989.0), "A100": (19.5, 156.0, 312.0)}
PEER_NAMES = {  # (bp_gpu, PyTorch eager, torch.compile) per precision
    "highest": ("bp_gpu-compiled-cuda", "torch-eager-cuda", "torch-compile-cuda"),
    "tf32": ("bp_gpu-compiled-cuda-tf32", "torch-eager-cuda-tf32", "torch-compile-cuda-tf32"),
    "bf16": ("bp_gpu-compiled-cuda-bf16", "torch-eager-cuda-bf16", "torch-compile-cuda-bf16"),
}
GEMM_REPEATS = 20


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def _sync() -> Callable[[], None]:
    from bp_gpu.backends import simulator_enabled

    if simulator_enabled():
        return lambda: None
    import cupy

    return lambda: cupy.cuda.get_current_stream().synchronize()


def _device_name() -> str:
    from bp_gpu.backends import cuda_status

    return cuda_status()[1]


def _peak(name: str) -> tuple[float, float, float] | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


# -- 1. correctness on the device --------------------------------------------------------------------------
def check_gradients(sizes: tuple[int, ...] = (37, 64, 24, 1), n: int = 300) -> dict[str, float]:
    """Relative error (2-norm) of the CUDA backend's gradient against the CPU emulation, per precision."""
    from bp_gpu import MLP

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    t = (rng.random((n, sizes[-1])) < 0.5).astype(np.float32)
    out = {}
    for p in ("tf32", "bf16"):
        g = [np.concatenate([np.concatenate([dW.ravel(), db.ravel()]) for dW, db in
                             MLP(list(sizes), precision=p, backend=b, seed=1).loss_and_grad(X, t)[1]])
             for b in ("cuda", "cpu")]
        out[p] = float(np.linalg.norm(g[0] - g[1]) / np.linalg.norm(g[1]))
    return out


# -- 2. cuBLAS's TF32 rounding -------------------------------------------------------------------------------
def _tf32_candidates(x: np.ndarray) -> dict[str, np.ndarray]:
    from bp_gpu.precision import round_tf32

    u = x.view(np.uint32)
    return {
        "truncation": (u & np.uint32(0xFFFFE000)).view(np.float32),
        "nearest, ties away (cvt.rna)": ((u + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32),
        "nearest, ties to even (round_tf32)": round_tf32(x),
    }


def tf32_rounding(n: int = 64) -> dict[str, Any]:
    """Which rounding of ``_tf32_candidates`` cuBLAS's TF32 GEMM applies to its operands: A (n, n)
    of values below, at and above half a TF32 ulp, times the identity."""
    from bp_gpu.cuda_host import CUDA_STEPS, array_module

    xp = array_module()
    rng = np.random.default_rng(3)
    kept = (rng.integers(0, 1 << 10, size=(n, n)) << 13).astype(np.uint32) | np.uint32(0x3F800000)  # [1, 2)
    dropped = rng.choice(np.array([0x0FFF, 0x1000, 0x1001, 0x0001, 0x1FFF], dtype=np.uint32), size=(n, n))
    A = (kept | dropped).view(np.float32)
    eye = np.eye(n, dtype=np.float32)
    a, b, out = xp.asarray(A), xp.asarray(eye), xp.zeros((n, n), np.float32)
    CUDA_STEPS.bind("matmul", a, b, out, "tf32")(None, None)
    _sync()()
    got = np.asarray(out.get() if hasattr(out, "get") else out)
    matches = [name for name, want in _tf32_candidates(A).items() if np.array_equal(got, want)]
    return {"matches": matches or ["none of them"], "agrees_with_round_tf32": "nearest, ties to even (round_tf32)"
            in matches}


# -- 3. GEMM throughput ----------------------------------------------------------------------------------------
def _time_gemm(call: Callable[[], None], sync: Callable[[], None], repeats: int) -> float:
    call()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        call()
    sync()
    return (time.perf_counter() - t0) / repeats


def gemm_throughput(sizes: tuple[int, ...], batch: int, repeats: int = GEMM_REPEATS) -> dict[str, Any]:
    """The three GEMMs of every layer of a step (forward Z W^T, weight gradient D^T Z, delta D W)
    on operands of each precision's storage, as the engine binds them: seconds, TFLOP/s, fraction
    of the dense peak (None when the device is not in ``PEAKS``)."""
    from bp_gpu.cuda_host import CUDA_STEPS, array_module

    xp, sync, name = array_module(), _sync(), _device_name()
    peak = _peak(name)
    rows: dict[str, Any] = {"device": name, "precisions": {}}
    for k, p in enumerate(PRECISIONS):
        total_s, total_flop = 0.0, 0
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            dt = np.uint16 if p == "bf16" else np.float32
            Z = xp.zeros((batch, fan_in), dt)
            W = xp.zeros((fan_out, fan_in), dt)
            D = xp.zeros((batch, fan_out), dt)
            extra = ("tf32",) if p == "tf32" else ()
            for a, b, shape in ((Z, W.T, (batch, fan_out)), (D.T, Z, (fan_out, fan_in)), (D, W, (batch, fan_in))):
                out = xp.zeros(shape, np.float32)
                gemm = CUDA_STEPS.bind("matmul", a, b, out, *extra)
                total_s += _time_gemm(lambda g=gemm: g(None, None), sync, repeats)
                total_flop += 2 * batch * fan_in * fan_out
        tflops = total_flop / total_s / 1e12
        rows["precisions"][p] = {"seconds": total_s, "tflops": tflops,
                                 "fraction_of_peak": None if peak is None else tflops / peak[k]}
    t = {p: rows["precisions"][p]["seconds"] for p in PRECISIONS}
    rows["tensor_cores"] = {"float32_over_tf32": t["highest"] / t["tf32"],
                            "float32_over_bf16": t["highest"] / t["bf16"]}
    return rows


# -- 4. training epochs beside PyTorch -------------------------------------------------------------------------
def epoch_seconds(peer_name: str, workload: Any) -> dict[str, Any]:
    """One timed epoch of a peer of ``bp_gpu.bench.peers`` (built, warmed up, reset first)."""
    from .peers import PEERS
    from .workloads import initial_weights, make_data

    cls = PEERS[peer_name]
    why = cls.unavailable()
    if why:
        return {"skipped": why}
    X, T = make_data(workload)
    peer = cls(workload, X, T, initial_weights(workload))
    peer.warmup()
    peer.reset()
    t0 = time.perf_counter()
    loss = peer.epoch()
    return {"seconds": time.perf_counter() - t0, "loss": float(loss)}


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for wname, rows in result.get("epochs", {}).items():
        ours, eager, comp = (rows.get(n, {}).get("seconds") for n in PEER_NAMES["bf16"])
        out[f"{wname} bf16 >= 1.2x autocast eager"] = None if None in (ours, eager) else eager / ours >= 1.2
        out[f"{wname} bf16 >= torch.compile bf16"] = None if None in (ours, comp) else comp / ours >= 1.0
    frac = result.get("gemms", {}).get("precisions", {}).get("bf16", {}).get("fraction_of_peak")
    out["W3 GEMMs >= 60% of the bf16 dense peak"] = None if frac is None else frac >= 0.6
    return out


def device_part(budget_s: float, workloads: tuple[Any, ...] = ("W2", "W3"),
                check_sizes: tuple[int, ...] = (37, 64, 24, 1), check_rows: int = 300) -> dict[str, Any]:
    """Everything in the module docstring, within ``budget_s`` seconds (a step that would start
    after it is recorded as skipped). ``workloads``: names in ``bp_gpu.bench.workloads.WORKLOADS`` or
    ``Workload`` objects (the simulator test's tiny ones); the GEMMs are the last one's. The
    gradients are checked on ``check_rows`` rows of a ``check_sizes`` network."""
    from .workloads import WORKLOADS

    budget = _Budget(budget_s)
    ws = [WORKLOADS[w] if isinstance(w, str) else w for w in workloads]
    result: dict[str, Any] = {"device": _device_name(), "skipped": []}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("correct", lambda: check_gradients(check_sizes, check_rows)),
        ("tf32_rounding", tf32_rounding),
        ("gemms", lambda: gemm_throughput(ws[-1].sizes, ws[-1].batch)),
    ]
    for name, run in steps:
        if budget.left() <= 0:
            result["skipped"].append(name)
            continue
        result[name] = run()
    result["epochs"] = {}
    # bp_gpu first, then PyTorch eager, torch.compile last (its compiling is the longest wait).
    for column in range(3):
        for w in ws:
            for p in PRECISIONS:
                peer = PEER_NAMES[p][column]
                if budget.left() <= 0:
                    result["skipped"].append(f"{w.name} {peer}")
                    continue
                result["epochs"].setdefault(w.name, {})[peer] = epoch_seconds(peer, w)
    result["targets"] = _targets(result)
    return result
