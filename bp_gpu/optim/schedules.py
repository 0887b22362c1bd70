"""Learning-rate schedules: pure functions of the step number, evaluated on the device.

A schedule is data (its kind and four numbers), not a Python callable, because the update kernels
compute the rate of each step themselves from the step count they keep on the device (see
``bp_gpu.optim.hyper``). Calling a schedule on the host, ``schedule(t)``, runs the very formula the
kernels run (``hyper.scheduled_rate``), so a test or a log line can compute the rate of any step.
Steps are counted from 1: ``schedule(1)`` is the rate of the first step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from . import hyper as H

_NAMES = {H.CONSTANT: "constant", H.WARMUP_COSINE: "warmup_cosine", H.WARMUP_LINEAR: "warmup_linear"}


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule; build one with :func:`constant`, :func:`warmup_cosine` or
    :func:`warmup_linear`. ``schedule(t)`` is the rate of step ``t`` (1-based)."""

    kind: int
    peak: float
    warmup_steps: int = 0
    total_steps: int = 0
    final: float = 0.0

    def __call__(self, t: int) -> float:
        return H.scheduled_rate(self.kind, self.peak, float(self.warmup_steps), float(self.total_steps),
                                self.final, float(t))

    @property
    def name(self) -> str:
        return _NAMES[self.kind]

    def __repr__(self) -> str:
        if self.kind == H.CONSTANT:
            return f"constant({self.peak!r})"
        return (f"{self.name}({self.peak!r}, warmup_steps={self.warmup_steps}, total_steps={self.total_steps}, "
                f"final={self.final!r})")


def _rate(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}; got {value!r}")
    return float(value)


def _steps(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return int(value)


def constant(lr: float) -> Schedule:
    """The same rate ``lr`` at every step."""
    return Schedule(H.CONSTANT, _rate("lr", lr, positive=True))


def _warmup(kind: int, peak: float, warmup_steps: int, total_steps: int, final: float) -> Schedule:
    peak = _rate("peak", peak, positive=True)
    warmup_steps = _steps("warmup_steps", warmup_steps, 0)
    total_steps = _steps("total_steps", total_steps, 1)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be <= total_steps ({total_steps})")
    return Schedule(kind, peak, warmup_steps, total_steps, _rate("final", final, positive=False))


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int, final: float = 0.0) -> Schedule:
    """Linear warm-up to ``peak``, then a cosine decay to ``final`` at ``total_steps``.

    ``rate(t) = peak * t / warmup_steps`` for ``t <= warmup_steps``; then, with
    ``p = (t - warmup_steps) / (total_steps - warmup_steps)`` capped at 1,
    ``rate(t) = final + (peak - final) * (1 + cos(pi * p)) / 2``; ``final`` after ``total_steps``.
    """
    return _warmup(H.WARMUP_COSINE, peak, warmup_steps, total_steps, final)


def warmup_linear(peak: float, warmup_steps: int, total_steps: int, final: float = 0.0) -> Schedule:
    """Linear warm-up to ``peak``, then a linear decay to ``final`` at ``total_steps``.

    ``rate(t) = peak * t / warmup_steps`` for ``t <= warmup_steps``; then, with ``p`` as in
    :func:`warmup_cosine`, ``rate(t) = peak + (final - peak) * p``; ``final`` after ``total_steps``.
    """
    return _warmup(H.WARMUP_LINEAR, peak, warmup_steps, total_steps, final)


def as_schedule(learning_rate: float | Schedule) -> Schedule:
    """A schedule from a float (constant) or a schedule."""
    if isinstance(learning_rate, Schedule):
        return learning_rate
    try:
        return constant(learning_rate)
    except ValueError:
        raise ValueError(
            f"learning_rate must be a number > 0 or a schedule (bp_gpu.optim.constant, warmup_cosine, "
            f"warmup_linear); got {learning_rate!r}"
        ) from None
