"""One optimizer step over the flat parameter buffer: every layer in one launch, replayable.

Math (``bp_gpu.steps_numpy.optimizer_update``, as PyTorch's SGD, Adam and AdamW), with t the step
being taken, lr = schedule(t), weight decay wd on the first ``n_weights`` entries only (the weights):
sgd ``g = grad + wd p; p -= lr g``; momentum ``m = beta1 m + g; p -= lr m``;
adam ``g = grad + wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps)``;
adamw ``p *= 1 - lr wd``, then adam's update with ``g = grad``. The gradient buffer is not modified.

Nothing that changes from step to step is a kernel argument: t, lr and the bias corrections come
from the float64 ``hyper`` buffer (``bp_gpu.optim.hyper``), and the step count advances on the
device, so the launch can be captured once in a CUDA graph and replayed. Every thread reads
``hyper[STEP]`` first; the last block to finish (an atomic ticket in ``hyper[TICKET]``, after a
fence) writes ``STEP = t`` and ``LR_LAST = lr`` and resets the ticket: no block can still be reading
the count it replaces.

Shapes: ``P`` parameters, ``S`` state rows. params, grads (P,); state (S, P) with m = state[0],
v = state[S - 1] (a (1, 1) placeholder for plain SGD, never read); hyper (N_HYPER,) float64.

Launch geometry (``_launch.tile_1d``): 1-D blocks, grid capped at one wave of this kernel on the
device (its occupancy, ``_launch.max_blocks``), grid-stride loop over P. Element-wise apart from
the ticket: bit-identical run to run.

Mixed precision: ``optimizer_update_bf16_kernel`` also writes the bfloat16 copy of every updated
weight, ``R[copy_index(wmap, i)] <- bf16(params[i])`` for i < n_weights (``kernels._bf16``; the
copies are (N_l, ld) blocks with padded rows), in the same pass: no launch of its own.

Memory-level parallelism: a thread loads ``ROWS`` elements of params, grads and the state its rule
has (4 to 16 loads) before it stores any, then one element at a time for the ragged tail: the
compiler cannot move a load above a store to another array it cannot prove does not alias it, so
element by element would keep one element's loads in flight (as in ``bias_sigmoid_forward``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda
from numba.cuda import libdevice

from ..optim import hyper as H
from . import _launch
from ._bf16 import bf16, check_weight_copy, copy_index

# libdevice's cospi: no stack frame, unlike cos (see bp_gpu.optim.hyper); the simulator's libdevice
# has no implementations, so it runs the Python formula.
_scheduled_rate = cuda.jit(device=True, inline="always")(
    H.scheduled_rate if _launch.SIMULATOR else H.rate_function(libdevice.cospi)
)

SGD, MOMENTUM, ADAM, ADAMW = H.SGD, H.MOMENTUM, H.ADAM, H.ADAMW
ROWS = 4  # elements loaded before the first store


@cuda.jit(device=True, inline="always")
def last_block_advances_step(hyper, t, lr):
    """Called by every thread of every block after its last read of ``hyper[STEP]``: the last block
    to get here writes the new step count and rate and resets the ticket for the next launch."""
    cuda.syncthreads()  # every thread of this block has read hyper[STEP]
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        cuda.threadfence()
        n_blocks = cuda.gridDim.x * cuda.gridDim.y
        if cuda.atomic.add(hyper, H.TICKET, 1.0) == n_blocks - 1.0:
            hyper[H.STEP] = t
            hyper[H.LR_LAST] = lr
            hyper[H.TICKET] = 0.0


@cuda.jit(device=True, inline="always")
def _update(rule, p, g, m, v, weight, lr, b1, b2, c1, c2, wd, eps, step_size, bc2_sqrt, decay_factor):
    """One element's step: (p, m, v) after it (m, v unchanged where the rule has none)."""
    if weight:
        if rule == ADAMW:
            p = p * decay_factor
        else:
            g = g + wd * p
    if rule == SGD:
        p = p - lr * g
    elif rule == MOMENTUM:
        m = b1 * m + g
        p = p - lr * m
    else:  # ADAM, ADAMW
        m = b1 * m + c1 * g
        v = b2 * v + c2 * g * g
        p = p - step_size * m / (math.sqrt(v) / bc2_sqrt + eps)
    return p, m, v


@cuda.jit(device=True, inline="always")
def _copy_weight(R, wmap, i, n_weights, p):
    """The bfloat16 copy of parameter i, if it is a weight (the GEMMs' r(W); biases are not GEMM
    operands)."""
    if i < n_weights:
        R[copy_index(wmap, i)] = bf16(p)


@cuda.jit(device=True, inline="always")
def _body(rule, params, grads, state, hyper, n_weights, R, wmap, copy):
    """The kernel body; ``copy`` (a constant of each kernel): also the bfloat16 copy of every
    updated weight, in the same pass (``_copy_weight``)."""
    ft = params.dtype.type  # every constant rounded once to the parameters' type, as the spec
    t = hyper[H.STEP] + 1.0
    lr64 = _scheduled_rate(int(hyper[H.SCHEDULE]), hyper[H.LR], hyper[H.WARMUP], hyper[H.TOTAL], hyper[H.FINAL], t)
    b1_64, b2_64, wd64 = hyper[H.BETA1], hyper[H.BETA2], hyper[H.WEIGHT_DECAY]
    lr, b1, b2, eps, wd = ft(lr64), ft(b1_64), ft(b2_64), ft(hyper[H.EPS]), ft(wd64)
    c1, c2 = ft(1.0 - b1_64), ft(1.0 - b2_64)
    step_size = ft(lr64 / (1.0 - b1_64**t))
    bc2_sqrt = ft(math.sqrt(1.0 - b2_64**t))
    decay_factor = ft(1.0 - lr64 * wd64)
    last = state.shape[0] - 1
    moments = rule != SGD  # state[0] is read and written
    second = rule == ADAM or rule == ADAMW  # state[last] too
    zero = ft(0)
    n = params.shape[0]
    s = cuda.gridsize(1)
    i = cuda.grid(1)
    while i + (ROWS - 1) * s < n:
        p0 = params[i]
        p1 = params[i + s]
        p2 = params[i + 2 * s]
        p3 = params[i + 3 * s]
        g0 = grads[i]
        g1 = grads[i + s]
        g2 = grads[i + 2 * s]
        g3 = grads[i + 3 * s]
        m0 = m1 = m2 = m3 = v0 = v1 = v2 = v3 = zero
        if moments:
            m0 = state[0, i]
            m1 = state[0, i + s]
            m2 = state[0, i + 2 * s]
            m3 = state[0, i + 3 * s]
        if second:
            v0 = state[last, i]
            v1 = state[last, i + s]
            v2 = state[last, i + 2 * s]
            v3 = state[last, i + 3 * s]
        p0, m0, v0 = _update(rule, p0, g0, m0, v0, i < n_weights, lr, b1, b2, c1, c2, wd, eps, step_size,
                             bc2_sqrt, decay_factor)
        p1, m1, v1 = _update(rule, p1, g1, m1, v1, i + s < n_weights, lr, b1, b2, c1, c2, wd, eps, step_size,
                             bc2_sqrt, decay_factor)
        p2, m2, v2 = _update(rule, p2, g2, m2, v2, i + 2 * s < n_weights, lr, b1, b2, c1, c2, wd, eps, step_size,
                             bc2_sqrt, decay_factor)
        p3, m3, v3 = _update(rule, p3, g3, m3, v3, i + 3 * s < n_weights, lr, b1, b2, c1, c2, wd, eps, step_size,
                             bc2_sqrt, decay_factor)
        params[i] = p0
        params[i + s] = p1
        params[i + 2 * s] = p2
        params[i + 3 * s] = p3
        if copy:
            _copy_weight(R, wmap, i, n_weights, p0)
            _copy_weight(R, wmap, i + s, n_weights, p1)
            _copy_weight(R, wmap, i + 2 * s, n_weights, p2)
            _copy_weight(R, wmap, i + 3 * s, n_weights, p3)
        if moments:
            state[0, i] = m0
            state[0, i + s] = m1
            state[0, i + 2 * s] = m2
            state[0, i + 3 * s] = m3
        if second:
            state[last, i] = v0
            state[last, i + s] = v1
            state[last, i + 2 * s] = v2
            state[last, i + 3 * s] = v3
        i += ROWS * s
    while i < n:
        m = state[0, i] if moments else zero
        v = state[last, i] if second else zero
        p, m, v = _update(rule, params[i], grads[i], m, v, i < n_weights, lr, b1, b2, c1, c2, wd, eps, step_size,
                          bc2_sqrt, decay_factor)
        params[i] = p
        if copy:
            _copy_weight(R, wmap, i, n_weights, p)
        if moments:
            state[0, i] = m
        if second:
            state[last, i] = v
        i += s
    last_block_advances_step(hyper, t, lr64)


@cuda.jit(cache=True)
def optimizer_update_kernel(rule, params, grads, state, hyper, n_weights):
    _body(rule, params, grads, state, hyper, n_weights, params, hyper, False)


@cuda.jit(cache=True)
def optimizer_update_bf16_kernel(rule, params, grads, state, hyper, n_weights, R, wmap):
    _body(rule, params, grads, state, hyper, n_weights, R, wmap, True)


def _check(rule: int, params: Any, grads: Any, state: Any, hyper: Any, n_weights: int) -> None:
    where = "optimizer_update"
    if rule not in (SGD, MOMENTUM, ADAM, ADAMW):
        raise ValueError(f"{where}: unknown update rule {rule}")
    n = params.shape[0]
    _launch.check_1d(params, n, "params", where)
    _launch.check_1d(grads, n, "grads", where)
    _launch.check_1d(hyper, H.N_HYPER, "hyper", where)
    if hyper.dtype != np.float64:
        raise TypeError(f"{where}: hyper must be float64; got {hyper.dtype}")
    rows = {SGD: 0, MOMENTUM: 1, ADAM: 2, ADAMW: 2}[rule]
    if rows and (state.ndim != 2 or tuple(state.shape) != (rows, n)):
        raise ValueError(f"{where}: state must have shape ({rows}, {n}) for update rule {rule}; got {state.shape}")
    if state.ndim != 2 or not state.flags.c_contiguous:
        raise ValueError(f"{where}: state must be a C-contiguous 2-D array")
    if not 0 <= n_weights <= n:
        raise ValueError(f"{where}: n_weights must be in [0, {n}]; got {n_weights}")


def prepare_optimizer_update(rule: int, params: Any, grads: Any, state: Any, hyper: Any,
                             n_weights: int) -> Callable[[], None]:
    """A launch of one SGD / momentum / Adam / AdamW step on these buffers, on CuPy's current stream
    of now, checked and planned once: calling it only enqueues the kernel (which advances ``hyper``).
    params, grads (P,); state (S, P); hyper (N_HYPER,) float64."""
    return _prepare(optimizer_update_kernel, rule, params, grads, state, hyper, n_weights, ())


def prepare_optimizer_update_round(rule: int, params: Any, grads: Any, state: Any, hyper: Any, n_weights: int,
                                   R: Any, wmap: Any, fmt: int) -> Callable[[], None]:
    """``prepare_optimizer_update`` whose kernel also writes the bfloat16 copy of every updated
    weight in the same pass: ``R[dst + i ld + j] <- bf16(W[i, j])`` by the (L, 5) int64 ``wmap``
    (``bp_gpu.steps_numpy.round_weights``).  R (flat copy buffer) uint16; fmt BF16."""
    check_weight_copy(R, wmap, n_weights, fmt, "optimizer_update_round")
    return _prepare(optimizer_update_bf16_kernel, rule, params, grads, state, hyper, n_weights, (R, wmap))


def _prepare(kernel_fn: Any, rule: int, params: Any, grads: Any, state: Any, hyper: Any, n_weights: int,
             copy: tuple) -> Callable[[], None]:
    _check(rule, params, grads, state, hyper, n_weights)
    args = (int(rule), _launch.arg(params, "params"), _launch.arg(grads, "grads"), _launch.arg(state, "state"),
            _launch.arg(hyper, "hyper"), int(n_weights), *(_launch.arg(a, "R, wmap") for a in copy))
    kernel = _launch.compiled(kernel_fn, args)
    grid, block = _launch.tile_1d(params.shape[0], _launch.max_blocks(kernel))
    return _launch.prepared(kernel_fn, kernel, grid, block, args, (params, grads, state, hyper, *copy))


def optimizer_update(rule: int, params: Any, grads: Any, state: Any, hyper: Any, n_weights: int) -> None:
    """One SGD / momentum / Adam / AdamW step over the flat buffer, on CuPy's current stream.
    params, grads (P,); state (S, P); hyper (N_HYPER,) float64, advanced by one step."""
    prepare_optimizer_update(rule, params, grads, state, hyper, n_weights)()


def optimizer_update_round(rule: int, params: Any, grads: Any, state: Any, hyper: Any, n_weights: int, R: Any,
                           wmap: Any, fmt: int) -> None:
    """``optimizer_update``, and the bfloat16 copy of the updated weights, on CuPy's current stream."""
    prepare_optimizer_update_round(rule, params, grads, state, hyper, n_weights, R, wmap, fmt)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    i8 = numba.int64
    sig = (i8, f[::1], f[::1], f[:, ::1], numba.float64[::1], i8)
    rows = [("optimizer_update_kernel", optimizer_update_kernel.py_func, sig)]
    if dtype == np.float32:
        rows.append(("optimizer_update_bf16_kernel", optimizer_update_bf16_kernel.py_func,
                     (*sig, numba.uint16[::1], numba.int64[:, ::1])))
    return rows
