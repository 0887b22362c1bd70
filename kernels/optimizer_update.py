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

# libdevice's cospi: no stack frame, unlike cos (see bp_gpu.optim.hyper); the simulator's libdevice
# has no implementations, so it runs the Python formula.
_scheduled_rate = cuda.jit(device=True, inline="always")(
    H.scheduled_rate if _launch.SIMULATOR else H.rate_function(libdevice.cospi)
)

SGD, MOMENTUM, ADAM, ADAMW = H.SGD, H.MOMENTUM, H.ADAM, H.ADAMW


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


@cuda.jit(cache=True)
def optimizer_update_kernel(rule, params, grads, state, hyper, n_weights):
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
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        p = params[i]
        g = grads[i]
        if i < n_weights:
            if rule == ADAMW:
                p = p * decay_factor
            else:
                g = g + wd * p
        if rule == SGD:
            p = p - lr * g
        elif rule == MOMENTUM:
            mi = b1 * state[0, i] + g
            state[0, i] = mi
            p = p - lr * mi
        else:  # ADAM, ADAMW
            mi = b1 * state[0, i] + c1 * g
            vi = b2 * state[last, i] + c2 * g * g
            state[0, i] = mi
            state[last, i] = vi
            p = p - step_size * mi / (math.sqrt(vi) / bc2_sqrt + eps)
        params[i] = p
    last_block_advances_step(hyper, t, lr64)


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
    _check(rule, params, grads, state, hyper, n_weights)
    args = (int(rule), _launch.arg(params, "params"), _launch.arg(grads, "grads"), _launch.arg(state, "state"),
            _launch.arg(hyper, "hyper"), int(n_weights))
    kernel = _launch.compiled(optimizer_update_kernel, args)
    grid, block = _launch.tile_1d(params.shape[0], _launch.max_blocks(kernel))
    return _launch.prepared(optimizer_update_kernel, kernel, grid, block, args, (params, grads, state, hyper))


def optimizer_update(rule: int, params: Any, grads: Any, state: Any, hyper: Any, n_weights: int) -> None:
    """One SGD / momentum / Adam / AdamW step over the flat buffer, on CuPy's current stream.
    params, grads (P,); state (S, P); hyper (N_HYPER,) float64, advanced by one step."""
    prepare_optimizer_update(rule, params, grads, state, hyper, n_weights)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    i8 = numba.int64
    sig = (i8, f[::1], f[::1], f[:, ::1], numba.float64[::1], i8)
    return [("optimizer_update_kernel", optimizer_update_kernel.py_func, sig)]
