"""The CPU backend's optimizer steps: ``bp_gpu.steps_numpy.optimizer_update`` and ``lamb_update``
compiled with Numba, one pass over the flat buffer each (LAMB: one pass per layer for the norms and
the moments, one for the update).

Same signatures and semantics as the spec (tested against it in ``tests/test_cpu_optimizer.py``):
the step count, the scheduled rate and the hyperparameters come from the float64 ``hyper`` buffer
(``bp_gpu.optim.hyper``) and the step advances ``hyper[STEP]`` itself, as the CUDA kernels do, so a
recorded step can be replayed without any host value changing.

Shapes: ``P`` parameters; ``S`` state rows (m, v); ``K`` LAMB segments.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .cpu_steps import _JIT, _dropped, _rounded
from .optim import hyper as H

RULES = (H.SGD, H.MOMENTUM, H.ADAM, H.ADAMW)

_scheduled_rate = nb.njit(inline="always", **_JIT)(H.rate_function(nb.njit(inline="always", **_JIT)(H.cos_pi)))


@nb.njit(inline="always", **_JIT)
def _span(rule, decay, params, grads, m, v, lo, hi, h):
    # params[lo:hi] under update rule ``rule``; ``decay``: weight decay applies to these entries.
    lr, b1, one_minus_b1, b2, one_minus_b2, eps, wd, step_size, bc2_sqrt, decay_factor = h
    for i in range(lo, hi):
        g = grads[i]
        p = params[i]
        if decay and rule != 3:  # L2: into the gradient (not AdamW's)
            g = g + wd * p
        if decay and rule == 3:  # AdamW: decoupled, on the parameter
            p = p * decay_factor
        if rule == 0:  # SGD
            p = p - lr * g
        elif rule == 1:  # MOMENTUM
            mi = b1 * m[i] + g
            m[i] = mi
            p = p - lr * mi
        else:  # ADAM, ADAMW
            mi = b1 * m[i] + one_minus_b1 * g
            vi = b2 * v[i] + one_minus_b2 * g * g
            m[i] = mi
            v[i] = vi
            p = p - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)
        params[i] = p


def _rule_update(rule: int):
    """The step of one update rule, compiled (on first use) for that rule alone: ``rule`` is a
    constant of the closure, so with ``_span`` inlined the other rules' branches fold away and the
    loop vectorizes (a rule tested per element made sgd over 6081 parameters take 4 us instead of
    0.5), and a fit compiles one rule's code, not four (1.5 s -> 0.4 s of a first run's compiling)."""

    @nb.njit(**_JIT)
    def update(params, grads, state, hyper, n_weights):
        t = hyper[H.STEP] + 1.0
        lr = _scheduled_rate(int(hyper[H.SCHEDULE]), hyper[H.LR], hyper[H.WARMUP], hyper[H.TOTAL], hyper[H.FINAL],
                             t)
        b1, b2, eps, wd = hyper[H.BETA1], hyper[H.BETA2], hyper[H.EPS], hyper[H.WEIGHT_DECAY]
        c = params.dtype.type  # every constant rounded once to the parameters' type, as the spec
        h = (c(lr), c(b1), c(1.0 - b1), c(b2), c(1.0 - b2), c(eps), c(wd), c(lr / (1.0 - b1**t)),
             c(math.sqrt(1.0 - b2**t)), c(1.0 - lr * wd))
        m, v = state[0], state[state.shape[0] - 1]
        _span(rule, True, params, grads, m, v, 0, n_weights, h)
        _span(rule, False, params, grads, m, v, n_weights, params.shape[0], h)
        hyper[H.STEP] = t
        hyper[H.LR_LAST] = lr

    return update


UPDATES = {rule: _rule_update(rule) for rule in RULES}  # rule -> its compiled step


def optimizer_update(rule: int, params: np.ndarray, grads: np.ndarray, state: np.ndarray, hyper: np.ndarray,
                     n_weights: int) -> None:
    """One SGD / momentum / Adam / AdamW step over the flat buffer (see
    ``bp_gpu.steps_numpy.optimizer_update``).  params, grads (P,); state (S, P); hyper (N_HYPER,)."""
    if rule not in RULES:
        raise ValueError(f"unknown update rule {rule}")
    UPDATES[rule](params, grads, state, hyper, int(n_weights))


@nb.njit(inline="always", **_JIT)
def _lamb_direction(p, mi, vi, bc1, bc2, eps, wd, decay):
    r = (mi / bc1) / (np.sqrt(vi / bc2) + eps)
    return r + wd * p if decay else r


@nb.njit(**_JIT)
def _lamb_update(params, grads, state, hyper, n_weights, segments):
    t = hyper[H.STEP] + 1.0
    lr = _scheduled_rate(int(hyper[H.SCHEDULE]), hyper[H.LR], hyper[H.WARMUP], hyper[H.TOTAL], hyper[H.FINAL], t)
    b1, b2 = hyper[H.BETA1], hyper[H.BETA2]
    c = params.dtype.type
    cb1, c1b1, cb2, c1b2 = c(b1), c(1.0 - b1), c(b2), c(1.0 - b2)
    bc1, bc2 = c(1.0 - b1**t), c(1.0 - b2**t)
    eps, wd = c(hyper[H.EPS]), c(hyper[H.WEIGHT_DECAY])
    m, v = state[0], state[1]
    for k in range(segments.shape[0] - 1):
        lo, hi = segments[k], segments[k + 1]
        decay = hi <= n_weights  # a segment is all weights or all biases
        w2 = 0.0
        r2 = 0.0
        for i in range(lo, hi):
            g = grads[i]
            mi = cb1 * m[i] + c1b1 * g
            vi = cb2 * v[i] + c1b2 * g * g
            m[i] = mi
            v[i] = vi
            p = params[i]
            r = _lamb_direction(p, mi, vi, bc1, bc2, eps, wd, decay)
            w2 += float(p) * float(p)
            r2 += float(r) * float(r)
        ratio = math.sqrt(w2) / math.sqrt(r2) if w2 > 0.0 and r2 > 0.0 else 1.0
        step = c(lr * ratio)
        for i in range(lo, hi):  # r again from the stored moments: the same value, no scratch buffer
            p = params[i]
            params[i] = p - step * _lamb_direction(p, m[i], v[i], bc1, bc2, eps, wd, decay)
    hyper[H.STEP] = t
    hyper[H.LR_LAST] = lr


def lamb_update(params: np.ndarray, grads: np.ndarray, state: np.ndarray, hyper: np.ndarray, n_weights: int,
                segments: np.ndarray) -> None:
    """One LAMB step (see ``bp_gpu.steps_numpy.lamb_update``).  params, grads (P,); state (2, P);
    hyper (N_HYPER,); segments (K + 1,) int64."""
    _lamb_update(params, grads, state, hyper, int(n_weights), segments)


@nb.njit(**_JIT)
def _round_weights(params, R, wmap, fmt):
    k = _dropped(fmt)
    for l in range(wmap.shape[0]):
        start, rows, cols, dst, ld = wmap[l, 0], wmap[l, 1], wmap[l, 2], wmap[l, 3], wmap[l, 4]
        for i in range(rows):
            for j in range(cols):
                R[dst + i * ld + j] = _rounded(params[start + i * cols + j], k)


def round_weights(params: np.ndarray, R: np.ndarray, wmap: np.ndarray, fmt: int) -> None:
    """The rounded copy of every weight matrix (see ``bp_gpu.steps_numpy.round_weights``).
    params (P,); R the flat copy buffer; wmap (L, 5) int64."""
    _round_weights(params, R, wmap, fmt)


def optimizer_update_round(rule: int, params: np.ndarray, grads: np.ndarray, state: np.ndarray, hyper: np.ndarray,
                           n_weights: int, R: np.ndarray, wmap: np.ndarray, fmt: int) -> None:
    """``optimizer_update``, then the rounded copy of the weights (a second pass over them: the CPU
    backend is the reference of the contract, a device writes the copy in the update's pass)."""
    optimizer_update(rule, params, grads, state, hyper, n_weights)
    _round_weights(params, R, wmap, fmt)


def lamb_update_round(params: np.ndarray, grads: np.ndarray, state: np.ndarray, hyper: np.ndarray, n_weights: int,
                      segments: np.ndarray, R: np.ndarray, wmap: np.ndarray, fmt: int) -> None:
    """``lamb_update``, then the rounded copy of the weights (see ``optimizer_update_round``)."""
    _lamb_update(params, grads, state, hyper, int(n_weights), segments)
    _round_weights(params, R, wmap, fmt)
