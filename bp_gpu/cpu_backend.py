"""The CPU backend's steps object: the Numba CPU steps and optimizer updates, and how to bind them.

The engine calls a backend through one object with the functions of ``bp_gpu.steps_numpy`` (same
names, signatures, in-place semantics) and ``bind(name, *args)``, which prepares one call of a
step (``bp_gpu.plan``). Here binding picks the compiled function for the arrays' dtype once, so a
prepared call skips the public wrappers' dispatch.

Mixed precision: the CPU emulates the rounding contract (docs/math.md). Every GEMM operand of
``"tf32"`` and ``"bf16"`` has a float32 copy holding its rounded values, written by the step that
writes the operand (``*_round`` steps, ``bp_gpu.cpu_steps``); the GEMMs are BLAS float32 products
of the copies, which is what a tensor core computes up to the order of the sums (a product of two
bfloat16 or two TF32 values is exact in float32). A reference, not a speed mode.
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
    round_rows = staticmethod(cpu_steps.round_rows)
    take_rows_round = staticmethod(cpu_steps.take_rows_round)
    bias_sigmoid_forward_round = staticmethod(cpu_steps.bias_sigmoid_forward_round)
    output_loss_delta_round = staticmethod(cpu_steps.output_loss_delta_round)
    sigmoid_delta_backward_round = staticmethod(cpu_steps.sigmoid_delta_backward_round)
    outer_sigmoid_delta_backward_round = staticmethod(cpu_steps.outer_sigmoid_delta_backward_round)
    optimizer_update_round = staticmethod(cpu_optimizer.optimizer_update_round)
    lamb_update_round = staticmethod(cpu_optimizer.lamb_update_round)
    round_weights = staticmethod(cpu_optimizer.round_weights)

    def operand_copies(self, precision: str) -> tuple[np.dtype, int] | None:
        """(dtype, row alignment in elements) of the rounded copies the engine keeps of every GEMM
        operand in ``precision``, or None for none (``"highest"``): float32 values, unpadded rows."""
        return None if precision == "highest" else (np.dtype(np.float32), 1)

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
