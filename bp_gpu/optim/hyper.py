"""What an optimizer step reads on the device: the layout of its float64 ``hyper`` buffer and the
learning-rate schedule, written once in plain Python.

A step must be replayable (captured once in a CUDA graph, replayed for every batch), so nothing that
changes from step to step may be a host scalar passed to a kernel: the step count, the scheduled
learning rate and Adam's bias corrections are all derived on the device from ``hyper``. The host
writes only the configuration slots (when a hyperparameter is set, never inside a step); the update
kernel advances ``hyper[STEP]`` itself.

``scheduled_rate`` is the one definition of every schedule. It is plain Python on scalars, so the
same source is the reference (``bp_gpu.optim.schedules``), the CPU step (compiled by ``numba.njit``)
and the CUDA kernels (compiled by ``numba.cuda.jit(device=True)``). Only cos(pi p) is passed in
(``rate_function``): the CUDA kernels use libdevice's ``cospi``, because ``cos`` there carries a
40-byte stack frame for the range reduction of huge arguments, and p is in [0, 1].
"""

from __future__ import annotations

import math

# -- the hyper buffer: (N_HYPER,) float64 -----------------------------------------------------
# Written by the device, in the step:
STEP = 0  # steps completed; the step being taken is t = STEP + 1 (exact in float64 below 2^53)
LR_LAST = 1  # the learning rate the last step used
TICKET = 2  # blocks of the running launch that have finished (CUDA's last-block pattern); 0 between launches
# Written by the host, when a hyperparameter is set:
SCHEDULE = 3  # CONSTANT, WARMUP_COSINE or WARMUP_LINEAR
LR = 4  # the constant rate, or the schedule's peak
WARMUP = 5  # warm-up steps
TOTAL = 6  # steps at the end of the decay
FINAL = 7  # the rate at and after TOTAL
BETA1 = 8  # Adam's and LAMB's beta1; SGD's momentum
BETA2 = 9
EPS = 10
WEIGHT_DECAY = 11
N_HYPER = 12
CONFIG = slice(SCHEDULE, N_HYPER)  # the slots the host writes

CONSTANT, WARMUP_COSINE, WARMUP_LINEAR = 0, 1, 2

# Update rules of the fused update over the flat buffer (``optimizer_update``); LAMB has its own
# two-pass update (``lamb_update``) because it needs per-layer norms first.
SGD, MOMENTUM, ADAM, ADAMW = 0, 1, 2, 3
UPDATE_RULES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM, "adamw": ADAMW}


def cos_pi(p):
    """cos(pi p)."""
    return math.cos(math.pi * p)


def rate_function(cos_pi):
    """``scheduled_rate`` computing cos(pi p) with ``cos_pi`` (a function Numba can compile)."""

    def scheduled_rate(kind, lr, warmup, total, final, t):
        """The learning rate of step ``t`` (1-based: the first step is t = 1), float64.

        - CONSTANT: ``lr``.
        - Both warm-up schedules: ``lr * t / warmup`` for ``t <= warmup`` (a linear ramp reaching
          ``lr`` at ``t = warmup``); then with ``p = min(1, (t - warmup) / (total - warmup))``
          (``p = 1`` when ``total <= warmup``):
        - WARMUP_COSINE: ``final + (lr - final) (1 + cos(pi p)) / 2``;
        - WARMUP_LINEAR: ``lr + (final - lr) p``.
        After ``total`` steps the rate stays at ``final``.
        """
        if kind == CONSTANT:
            return lr
        if t <= warmup:
            return lr * t / warmup
        p = 1.0
        if total > warmup:
            p = min(1.0, (t - warmup) / (total - warmup))
        if kind == WARMUP_COSINE:
            return final + (lr - final) * 0.5 * (1.0 + cos_pi(p))
        return lr + (final - lr) * p

    return scheduled_rate


scheduled_rate = rate_function(cos_pi)
