"""One LAMB step over the flat parameter buffer in two launches: moments and per-layer norms, then
the update scaled by each layer's trust ratio.

Math (``bp_gpu.steps_numpy.lamb_update``; You et al. 2019, Algorithm 2), t the step being taken,
lr = schedule(t): ``m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; r = (m/bc1) / (sqrt(v/bc2) + eps) + wd p``
(wd on weights only); per segment k (every W_l and every b_l): ``ratio_k = ||p_k|| / ||r_k||``, 1
where either norm is 0; ``p_k -= lr ratio_k r_k``.

Launch 1 (``lamb_moments_kernel``) updates m and v, and sums ||p||^2 and ||r||^2 per block in float64
(a fixed-order tree in shared memory) into ``work``; the last block to finish (atomic ticket in
``hyper[TICKET]`` after a fence, see ``optimizer_update``) reduces each segment's partials in a fixed
order and writes the trust ratios. Launch 2 (``lamb_apply_kernel``) recomputes r from the stored
moments (the same value: same inputs, same expression) and applies it; its last block advances
``hyper[STEP]``. Deterministic: the grid depends only on the segment sizes and the device.

Mixed precision: ``lamb_apply_bf16_kernel`` also writes the bfloat16 copy of every updated weight
in launch 2 (see ``optimizer_update``).

Shapes: ``P`` parameters, ``K`` segments, ``GX`` blocks per segment. params, grads (P,); state (2, P);
hyper (N_HYPER,) float64; segments (K + 1,) int64 (boundaries, the first 0 and the last P; a device
copy is kept per boundaries); work (K + 2 K GX,) float64: the K ratios, then the (K, GX, 2) partial
sums. ``work`` is written by launch 1 and read by launch 2, so it belongs to one prepared pair: two
optimizers, or one optimizer's eager step and a replay on another stream, sharing it would read each
other's ratios. Each ``prepare_lamb_update`` allocates its own; the eager ``lamb_update`` uses one
per (device, stream), whose launches run in stream order.

Launch geometry: a (GX, K) grid of 1-D blocks: blockIdx.y is the segment, blockIdx.x and threadIdx.x
grid-stride over it. Memory-level parallelism: each thread loads ``ROWS`` elements of every array it
reads (16 loads in launch 1, 12 in launch 2) before it stores any (see ``optimizer_update``); the
norms still add the elements in the order of the one-at-a-time loop, so they are the same sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda

from ..optim import hyper as H
from . import _launch
from ._bf16 import check_weight_copy
from ._launch import MAX_THREADS
from ._reduce import block_sum
from .optimizer_update import ROWS, _copy_weight, _scheduled_rate, last_block_advances_step


@cuda.jit(device=True, inline="always")
def _constants(hyper, ft):
    t = hyper[H.STEP] + 1.0
    lr = _scheduled_rate(int(hyper[H.SCHEDULE]), hyper[H.LR], hyper[H.WARMUP], hyper[H.TOTAL], hyper[H.FINAL], t)
    b1, b2 = hyper[H.BETA1], hyper[H.BETA2]
    bc1, bc2 = ft(1.0 - b1**t), ft(1.0 - b2**t)
    return t, lr, bc1, bc2, ft(hyper[H.EPS]), ft(hyper[H.WEIGHT_DECAY])


@cuda.jit(device=True, inline="always")
def _direction(p, mi, vi, bc1, bc2, eps, wd, decay):
    r = (mi / bc1) / (math.sqrt(vi / bc2) + eps)
    return r + wd * p if decay else r


@cuda.jit(cache=True)
def lamb_moments_kernel(params, grads, state, hyper, n_weights, segments, work):
    ft = params.dtype.type
    t, lr, bc1, bc2, eps, wd = _constants(hyper, ft)
    b1, b2 = ft(hyper[H.BETA1]), ft(hyper[H.BETA2])
    c1, c2 = ft(1.0 - hyper[H.BETA1]), ft(1.0 - hyper[H.BETA2])
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    k = cuda.blockIdx.y
    n_seg = segments.shape[0] - 1
    gx = cuda.gridDim.x
    lo, hi = segments[k], segments[k + 1]
    decay = hi <= n_weights  # a segment is all weights or all biases
    w2 = 0.0
    r2 = 0.0
    s = gx * cuda.blockDim.x
    i = lo + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i + (ROWS - 1) * s < hi:
        g0 = grads[i]
        g1 = grads[i + s]
        g2 = grads[i + 2 * s]
        g3 = grads[i + 3 * s]
        m0 = state[0, i]
        m1 = state[0, i + s]
        m2 = state[0, i + 2 * s]
        m3 = state[0, i + 3 * s]
        v0 = state[1, i]
        v1 = state[1, i + s]
        v2 = state[1, i + 2 * s]
        v3 = state[1, i + 3 * s]
        p0 = params[i]
        p1 = params[i + s]
        p2 = params[i + 2 * s]
        p3 = params[i + 3 * s]
        m0 = b1 * m0 + c1 * g0
        m1 = b1 * m1 + c1 * g1
        m2 = b1 * m2 + c1 * g2
        m3 = b1 * m3 + c1 * g3
        v0 = b2 * v0 + c2 * g0 * g0
        v1 = b2 * v1 + c2 * g1 * g1
        v2 = b2 * v2 + c2 * g2 * g2
        v3 = b2 * v3 + c2 * g3 * g3
        state[0, i] = m0
        state[0, i + s] = m1
        state[0, i + 2 * s] = m2
        state[0, i + 3 * s] = m3
        state[1, i] = v0
        state[1, i + s] = v1
        state[1, i + 2 * s] = v2
        state[1, i + 3 * s] = v3
        d0 = _direction(p0, m0, v0, bc1, bc2, eps, wd, decay)
        d1 = _direction(p1, m1, v1, bc1, bc2, eps, wd, decay)
        d2 = _direction(p2, m2, v2, bc1, bc2, eps, wd, decay)
        d3 = _direction(p3, m3, v3, bc1, bc2, eps, wd, decay)
        # The sums in element order, as the one-at-a-time loop below adds them.
        w2 += float(p0) * float(p0)
        r2 += float(d0) * float(d0)
        w2 += float(p1) * float(p1)
        r2 += float(d1) * float(d1)
        w2 += float(p2) * float(p2)
        r2 += float(d2) * float(d2)
        w2 += float(p3) * float(p3)
        r2 += float(d3) * float(d3)
        i += ROWS * s
    while i < hi:
        g = grads[i]
        mi = b1 * state[0, i] + c1 * g
        vi = b2 * state[1, i] + c2 * g * g
        state[0, i] = mi
        state[1, i] = vi
        p = params[i]
        r = _direction(p, mi, vi, bc1, bc2, eps, wd, decay)
        w2 += float(p) * float(p)
        r2 += float(r) * float(r)
        i += s
    w2 = block_sum(sh, w2)
    r2 = block_sum(sh, r2)
    part = n_seg + 2 * (k * gx + cuda.blockIdx.x)  # (K, GX, 2) after the K ratios
    if cuda.threadIdx.x == 0:
        work[part] = w2
        work[part + 1] = r2
    # The last block turns the partials into trust ratios (its syncthreads are reached by the whole
    # block: the branch depends on a shared value).
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        cuda.threadfence()
        sh[0] = 1.0 if cuda.atomic.add(hyper, H.TICKET, 1.0) == gx * n_seg - 1.0 else 0.0
    cuda.syncthreads()
    if sh[0] == 1.0:
        cuda.threadfence()
        for s in range(n_seg):
            wa = 0.0
            ra = 0.0
            for j in range(cuda.threadIdx.x, gx, cuda.blockDim.x):
                wa += work[n_seg + 2 * (s * gx + j)]
                ra += work[n_seg + 2 * (s * gx + j) + 1]
            wa = block_sum(sh, wa)
            ra = block_sum(sh, ra)
            if cuda.threadIdx.x == 0:
                work[s] = math.sqrt(wa) / math.sqrt(ra) if wa > 0.0 and ra > 0.0 else 1.0
        if cuda.threadIdx.x == 0:
            hyper[H.TICKET] = 0.0


@cuda.jit(device=True, inline="always")
def _apply(params, state, hyper, n_weights, segments, work, R, wmap, copy):
    """The body of ``lamb_apply_kernel``; ``copy`` (a constant of each kernel): also the bfloat16
    copy of every updated weight, in the same pass."""
    ft = params.dtype.type
    t, lr, bc1, bc2, eps, wd = _constants(hyper, ft)
    k = cuda.blockIdx.y
    lo, hi = segments[k], segments[k + 1]
    decay = hi <= n_weights
    step = ft(lr * work[k])
    s = cuda.gridDim.x * cuda.blockDim.x
    i = lo + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i + (ROWS - 1) * s < hi:
        p0 = params[i]
        p1 = params[i + s]
        p2 = params[i + 2 * s]
        p3 = params[i + 3 * s]
        m0 = state[0, i]
        m1 = state[0, i + s]
        m2 = state[0, i + 2 * s]
        m3 = state[0, i + 3 * s]
        v0 = state[1, i]
        v1 = state[1, i + s]
        v2 = state[1, i + 2 * s]
        v3 = state[1, i + 3 * s]
        q0 = p0 - step * _direction(p0, m0, v0, bc1, bc2, eps, wd, decay)
        params[i] = q0
        q1 = p1 - step * _direction(p1, m1, v1, bc1, bc2, eps, wd, decay)
        params[i + s] = q1
        q2 = p2 - step * _direction(p2, m2, v2, bc1, bc2, eps, wd, decay)
        params[i + 2 * s] = q2
        q3 = p3 - step * _direction(p3, m3, v3, bc1, bc2, eps, wd, decay)
        params[i + 3 * s] = q3
        if copy:
            _copy_weight(R, wmap, i, n_weights, q0)
            _copy_weight(R, wmap, i + s, n_weights, q1)
            _copy_weight(R, wmap, i + 2 * s, n_weights, q2)
            _copy_weight(R, wmap, i + 3 * s, n_weights, q3)
        i += ROWS * s
    while i < hi:
        p = params[i]
        q = p - step * _direction(p, state[0, i], state[1, i], bc1, bc2, eps, wd, decay)
        params[i] = q
        if copy:
            _copy_weight(R, wmap, i, n_weights, q)
        i += s
    last_block_advances_step(hyper, t, lr)


@cuda.jit(cache=True)
def lamb_apply_kernel(params, state, hyper, n_weights, segments, work):
    _apply(params, state, hyper, n_weights, segments, work, params, state, False)


@cuda.jit(cache=True)
def lamb_apply_bf16_kernel(params, state, hyper, n_weights, segments, work, R, wmap):
    _apply(params, state, hyper, n_weights, segments, work, R, wmap, True)


def geometry(segments: np.ndarray) -> tuple[tuple[int, int], int]:
    """((GX, K), threads): GX blocks per segment, enough for the longest segment, K * GX capped at
    about one wave of the device (and at least one block per segment)."""
    seg = np.asarray(segments)
    n_seg = len(seg) - 1
    longest = int(np.max(np.diff(seg))) if n_seg else 0
    threads = _launch.THREADS
    gx = max(1, min(-(-longest // threads), _launch.max_blocks() // max(n_seg, 1)))
    return (gx, n_seg), threads


def work_size(segments: np.ndarray) -> int:
    """Float64 entries ``work`` needs for these segments: K ratios and (K, GX, 2) partials."""
    (gx, n_seg), _ = geometry(segments)
    return n_seg + 2 * n_seg * gx


_segment_buffers: dict[tuple, Any] = {}


def _device_segments(segments: np.ndarray) -> Any:
    """The boundaries on the device, copied once per device and boundaries (only ever read), so a
    step never copies."""
    key = (_launch._device_id(), tuple(int(s) for s in segments))
    seg = _segment_buffers.get(key)
    if seg is None:
        xp = np if _launch.SIMULATOR else _launch._cp()
        seg = _segment_buffers[key] = xp.asarray(segments, dtype=np.int64)
    return seg


def prepare_lamb_update(params: Any, grads: Any, state: Any, hyper: Any, n_weights: int,
                        segments: np.ndarray, work: Any = None) -> Callable[[], None]:
    """The two launches of one LAMB step on these buffers, on CuPy's current stream of now, checked
    and planned once.  params, grads (P,); state (2, P); hyper (N_HYPER,) float64, advanced by one
    step; segments (K + 1,) int64 host array (the boundaries); work: float64 device scratch of at
    least ``work_size(segments)`` entries that no other launch uses meanwhile (default: allocated
    here, owned by these launches; see the module docstring)."""
    return _prepare("lamb_update", params, grads, state, hyper, n_weights, segments, work, ())


def prepare_lamb_update_round(params: Any, grads: Any, state: Any, hyper: Any, n_weights: int, segments: np.ndarray,
                              R: Any, wmap: Any, fmt: int, work: Any = None) -> Callable[[], None]:
    """``prepare_lamb_update`` whose second launch also writes the bfloat16 copy of every updated
    weight (see ``optimizer_update.prepare_optimizer_update_round``).  R uint16; wmap (L, 5) int64."""
    check_weight_copy(R, wmap, n_weights, fmt, "lamb_update_round")
    return _prepare("lamb_update_round", params, grads, state, hyper, n_weights, segments, work, (R, wmap))


def _prepare(where: str, params: Any, grads: Any, state: Any, hyper: Any, n_weights: int, segments: np.ndarray,
             work: Any, copy: tuple) -> Callable[[], None]:
    n = params.shape[0]
    _launch.check_1d(params, n, "params", where)
    _launch.check_1d(grads, n, "grads", where)
    _launch.check_1d(hyper, H.N_HYPER, "hyper", where)
    if state.ndim != 2 or tuple(state.shape) != (2, n) or not state.flags.c_contiguous:
        raise ValueError(f"{where}: state must be a C-contiguous (2, {n}) array; got {state.shape}")
    seg = np.asarray(segments)
    if seg.ndim != 1 or len(seg) < 2 or seg[0] != 0 or seg[-1] != n or np.any(np.diff(seg) < 0):
        raise ValueError(f"{where}: segments must rise from 0 to {n}; got {seg.tolist()}")
    seg_dev = _device_segments(seg)
    if work is None:
        work = (np if _launch.SIMULATOR else _launch._cp()).zeros(work_size(seg), np.float64)
    elif work.ndim != 1 or work.dtype != np.float64 or work.shape[0] < work_size(seg) or not work.flags.c_contiguous:
        raise ValueError(f"{where}: work must be a contiguous float64 array of at least {work_size(seg)} entries; "
                         f"got {work.dtype} of shape {tuple(work.shape)}")
    grid, block = geometry(seg)
    p, s, h, sd, w = (_launch.arg(x, name) for x, name in
                      ((params, "params"), (state, "state"), (hyper, "hyper"), (seg_dev, "segments"), (work, "work")))
    nw = int(n_weights)
    moments_args = (p, _launch.arg(grads, "grads"), s, h, nw, sd, w)
    apply_args = (p, s, h, nw, sd, w, *(_launch.arg(a, "R, wmap") for a in copy))
    apply_fn = lamb_apply_bf16_kernel if copy else lamb_apply_kernel
    owners = (params, grads, state, hyper, seg_dev, work, *copy)
    moments = _launch.prepared(lamb_moments_kernel, _launch.compiled(lamb_moments_kernel, moments_args), grid,
                               block, moments_args, owners)
    apply = _launch.prepared(apply_fn, _launch.compiled(apply_fn, apply_args), grid, block, apply_args, owners)

    def launch() -> None:
        moments()
        apply()

    return launch


def lamb_update(params: Any, grads: Any, state: Any, hyper: Any, n_weights: int, segments: np.ndarray) -> None:
    """One LAMB step on CuPy's current stream: two launches (see ``prepare_lamb_update``), with the
    stream's own ``work`` (one per device and stream: eager steps on one stream run in order)."""
    work = _launch.workspace("lamb_work", np.float64, work_size(np.asarray(segments)))
    prepare_lamb_update(params, grads, state, hyper, n_weights, segments, work)()


def lamb_update_round(params: Any, grads: Any, state: Any, hyper: Any, n_weights: int, segments: np.ndarray,
                      R: Any, wmap: Any, fmt: int) -> None:
    """One LAMB step and the bfloat16 copy of the updated weights, on CuPy's current stream, with the
    stream's own ``work`` (as ``lamb_update``)."""
    work = _launch.workspace("lamb_work", np.float64, work_size(np.asarray(segments)))
    prepare_lamb_update_round(params, grads, state, hyper, n_weights, segments, R, wmap, fmt, work)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    d1, i8, i1 = numba.float64[::1], numba.int64, numba.int64[::1]
    apply_sig = (f[::1], f[:, ::1], d1, i8, i1, d1)
    rows = [
        ("lamb_moments_kernel", lamb_moments_kernel.py_func, (f[::1], f[::1], f[:, ::1], d1, i8, i1, d1)),
        ("lamb_apply_kernel", lamb_apply_kernel.py_func, apply_sig),
    ]
    if dtype == np.float32:
        rows.append(("lamb_apply_bf16_kernel", lamb_apply_bf16_kernel.py_func,
                     (*apply_sig, numba.uint16[::1], numba.int64[:, ::1])))
    return rows
