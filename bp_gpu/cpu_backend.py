"""The CPU backend's steps object: the Numba CPU steps and optimizer updates, and how to bind them.

The engine calls a backend through one object with the functions of ``bp_gpu.steps_numpy`` (same
names, signatures, in-place semantics) and ``bind(name, *args)``, which prepares one call of a
step (``bp_gpu.plan``). Here binding picks the compiled function for the arrays' dtype once, so a
prepared call skips the public wrappers' dispatch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import cpu_optimizer, cpu_steps
from .plan import Op, bind_call


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out <- a @ b (OpenBLAS), the engine's GEMM."""
    np.matmul(a, b, out=out)


class CpuSteps:
    """The CPU backend's steps (``xp = numpy``)."""

    matmul = staticmethod(matmul)
    bias_sigmoid_forward = staticmethod(cpu_steps.bias_sigmoid_forward)
    output_loss_delta = staticmethod(cpu_steps.output_loss_delta)
    sigmoid_delta_backward = staticmethod(cpu_steps.sigmoid_delta_backward)
    outer_sigmoid_delta_backward = staticmethod(cpu_steps.outer_sigmoid_delta_backward)
    optimizer_update = staticmethod(cpu_optimizer.optimizer_update)
    lamb_update = staticmethod(cpu_optimizer.lamb_update)

    def bind(self, name: str, *args: Any) -> Op:
        """One prepared call of step ``name`` (``bp_gpu.plan.bind_call``)."""
        if name == "bias_sigmoid_forward":
            A = args[0]
            fn = cpu_steps._bias_sigmoid_forward_f32 if A.dtype == np.float32 else cpu_steps._bias_sigmoid_forward_f64
            return bind_call(fn, *args)
        if name == "sigmoid_delta_backward":
            return bind_call(cpu_steps._sigmoid_delta_backward, *args)
        if name == "outer_sigmoid_delta_backward":
            return bind_call(cpu_steps._outer_sigmoid_delta_backward, *args)
        if name == "optimizer_update":
            rule, *rest = args
            if rule not in cpu_optimizer.RULES:
                raise ValueError(f"unknown update rule {rule}")
            return bind_call(cpu_optimizer.UPDATES[rule], *rest)
        return bind_call(getattr(self, name), *args)


CPU_STEPS = CpuSteps()
