"""One optimizer step over the flat parameter buffer: every layer in one launch.

Math, with g = grad + weight_decay p on the first ``n_weights`` entries (the weights; biases are
not decayed), as PyTorch's SGD and Adam:
sgd ``p -= lr g``; momentum ``m = momentum m + g; p -= lr m``;
adam ``m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m / bc1) / (sqrt(v / bc2) + eps)``.
The gradient buffer is not modified. Reference: ``bp_gpu.steps_numpy.optimizer_update``.

Shapes: ``P`` parameters. params, grads (P,); m (P,) for momentum and adam; v (P,) for adam. The
unused state buffers may be None (or any array: they are neither read nor written).

Launch geometry (``_launch.tile_1d``): 1-D blocks, grid capped at about one wave of the device,
grid-stride loop over P. Elementwise: no reduction, so trivially deterministic.
"""

from __future__ import annotations

import math
from typing import Any

import numba
from numba import cuda

from . import _launch

SGD, MOMENTUM, ADAM = 0, 1, 2  # the codes of bp_gpu.steps_numpy


@cuda.jit
def optimizer_update_kernel(
    kind, params, grads, m, v, n_weights, lr, momentum, weight_decay, beta1, beta2, eps, bc1, bc2
):
    ft = params.dtype.type  # every constant in the parameters' type, as NumPy does
    lr_, mom, wd = ft(lr), ft(momentum), ft(weight_decay)
    b1, b2, c1, c2 = ft(beta1), ft(beta2), ft(1.0 - beta1), ft(1.0 - beta2)
    bc1_, bc2_, eps_ = ft(bc1), ft(bc2), ft(eps)
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        p = params[i]
        g = grads[i]
        if i < n_weights:
            g = g + wd * p
        if kind == SGD:
            p = p - lr_ * g
        elif kind == MOMENTUM:
            mi = mom * m[i] + g
            m[i] = mi
            p = p - lr_ * mi
        else:  # ADAM
            mi = b1 * m[i] + c1 * g
            vi = b2 * v[i] + c2 * g * g
            m[i] = mi
            v[i] = vi
            p = p - lr_ * (mi / bc1_) / (math.sqrt(vi / bc2_) + eps_)
        params[i] = p


def optimizer_update(
    kind: int,
    params: Any,
    grads: Any,
    m: Any,
    v: Any,
    n_weights: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    beta1: float,
    beta2: float,
    eps: float,
    bias_correction1: float,
    bias_correction2: float,
) -> None:
    """One SGD / momentum / Adam step over the flat buffer, on CuPy's current stream.
    params, grads (P,); m, v (P,) where the optimizer uses them."""
    where = "optimizer_update"
    if kind not in (SGD, MOMENTUM, ADAM):
        raise ValueError(f"unknown optimizer code {kind}")
    n = params.shape[0]
    _launch.check_1d(params, n, "params", where)
    _launch.check_1d(grads, n, "grads", where)
    if not 0 <= n_weights <= n:
        raise ValueError(f"{where}: n_weights must be in [0, {n}]; got {n_weights}")
    if kind in (MOMENTUM, ADAM):
        if m is None:
            raise ValueError(f"{where}: m (first-moment buffer) is required for optimizer code {kind}")
        _launch.check_1d(m, n, "m", where)
    else:
        # A separate placeholder of the right type (never an alias of params: the simulator
        # copies each argument back after the launch); SGD never touches it.
        m = _launch.workspace("unused_state", params.dtype, 1)[:1]
    if kind == ADAM:
        if v is None:
            raise ValueError(f"{where}: v (second-moment buffer) is required for Adam")
        _launch.check_1d(v, n, "v", where)
    else:
        v = _launch.workspace("unused_state", params.dtype, 1)[:1]  # only Adam touches v
    grid, block = _launch.tile_1d(n)
    optimizer_update_kernel[grid, block, _launch.stream()](
        int(kind),
        _launch.arg(params, "params"),
        _launch.arg(grads, "grads"),
        _launch.arg(m, "m"),
        _launch.arg(v, "v"),
        int(n_weights),
        float(lr),
        float(momentum),
        float(weight_decay),
        float(beta1),
        float(beta2),
        float(eps),
        float(bias_correction1),
        float(bias_correction2),
    )


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f1, i8, d = numba.from_dtype(dtype)[::1], numba.int64, numba.float64
    sig = (i8, f1, f1, f1, f1, i8, d, d, d, d, d, d, d, d)
    return [("optimizer_update_kernel", optimizer_update_kernel.py_func, sig)]
