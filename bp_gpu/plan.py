"""Prepared calls: a training step as a list of calls bound once and replayed.

A backend binds each call of a step once per (batch size, scale) — the GEMMs and the fused steps
with their buffers, geometry and scalars — so that running a step is only calling them in order:
no argument checks, no geometry arithmetic and no cache-key building per step. The same list is
what a compiled step replays (``bp_gpu.compiled_step``): on the CPU as it is, on CUDA captured once
into a CUDA graph.

The batch itself is the only thing that may change between calls of a list: an argument bound to
the slot ``X`` or ``T`` is taken from the call, ``op(X, T)``. Everything else a step reads that
changes from step to step lives in device buffers (see ``bp_gpu.optim.hyper``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

Op = Callable[[Any, Any], None]  # op(X, T): one prepared call of a step


class Slot:
    """A placeholder for a per-call input of a prepared call."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<slot {self.name}>"


X = Slot("X")  # the batch's features, (B, N_0)
T = Slot("T")  # the batch's targets, (B, N_L)


def bind_call(fn: Callable[..., None], *args: Any) -> Op:
    """``op(X, T)`` calling ``fn(*args)`` with the slots ``X``/``T`` replaced by the call's inputs."""
    slots = [i for i, a in enumerate(args) if isinstance(a, Slot)]
    if not slots:
        call = partial(fn, *args)
        return lambda X, T: call()
    if len(slots) == 1:
        i = slots[0]
        before, after = args[:i], args[i + 1 :]
        if args[i] is X:
            return lambda X, T: fn(*before, X, *after)
        return lambda X, T: fn(*before, T, *after)

    def op(X_: Any, T_: Any) -> None:
        fn(*(X_ if a is X else T_ if a is T else a for a in args))

    return op


def run(ops: list[Op], X: Any, T: Any) -> None:
    """Call every op of a list in order."""
    for op in ops:
        op(X, T)
