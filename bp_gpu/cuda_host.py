"""The CUDA backend's host layer: CuPy buffers and cuBLAS GEMMs, Numba kernels for the fused steps.

``make_cuda_engine`` builds the same ``bp_gpu.engine.Engine`` the CPU backend uses, with
``xp = cupy`` and ``steps = CUDA_STEPS``: the launchers of ``bp_gpu.kernels``, which have the
signatures and in-place semantics of ``bp_gpu.steps_numpy``, and prepared launches of them
(``CudaSteps.bind``). Every buffer (parameters, gradients, activations, deltas, loss, reduction
workspaces) is allocated once per (architecture, batch capacity); a training step then only
enqueues GEMMs and kernels on CuPy's current stream: no allocation of device memory, no
host-device copy, no host synchronization (the loss stays on the device until the caller reads it).

Per layer and step: forward = 1 GEMM + 1 launch; backward = 2 GEMMs + 1 launch (delta times
sigma' and the bias-gradient column sums, finished by the grid's last block; below a single-unit
layer 1 GEMM + 1 launch, the outer product fused in); the output layer 1 launch (delta, bias
gradient, loss and the running loss sum); the optimizer 1 launch for all layers.

With ``NUMBA_ENABLE_CUDASIM=1`` the same host code runs with ``xp = numpy`` and the kernels run in
Numba's simulator: how the tests prove this backend on machines without a GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .backends import BackendUnavailableError, cuda_status, simulator_enabled
from .engine import Engine
from .kernels import bias_sigmoid_forward as _forward
from .kernels import optimizer_update as _optimizer
from .kernels import outer_sigmoid_delta_backward as _outer
from .kernels import output_loss_delta as _output
from .kernels import sigmoid_delta_backward as _backward


class CudaSteps:
    """The fused steps of ``bp_gpu.steps_numpy``, as Numba CUDA launchers.

    Each takes device arrays (CuPy; NumPy in the simulator), writes its outputs in place and
    returns nothing; launches go on CuPy's current stream. ``bind`` prepares a launch once for
    arrays that a training step reuses, so that the step only enqueues it.
    """

    bias_sigmoid_forward = staticmethod(_forward.bias_sigmoid_forward)
    output_loss_delta = staticmethod(_output.output_loss_delta)
    sigmoid_delta_backward = staticmethod(_backward.sigmoid_delta_backward)
    outer_sigmoid_delta_backward = staticmethod(_outer.outer_sigmoid_delta_backward)
    optimizer_update = staticmethod(_optimizer.optimizer_update)

    _MODULES = {
        "bias_sigmoid_forward": _forward,
        "output_loss_delta": _output,
        "sigmoid_delta_backward": _backward,
        "outer_sigmoid_delta_backward": _outer,
        "optimizer_update": _optimizer,
    }

    def bind(self, name: str, *args: Any) -> Callable[[], None]:
        """The step ``name`` on ``args`` (the step's own arguments) as a prepared launch: checked,
        planned and packed now, on CuPy's current stream of now; calling it only enqueues the
        kernel. It keeps its arrays alive and always writes into them: prepare again for other
        arrays, shapes or scalars. A step whose module has no ``prepare_<name>`` yet is bound to
        its eager launcher with these arguments (checked and planned at every call).
        """
        module = self._MODULES.get(name)
        if module is None:
            raise ValueError(f"CudaSteps.bind: no step named {name!r}; steps: {', '.join(self._MODULES)}")
        prepare = getattr(module, f"prepare_{name}", None)
        if prepare is None:
            return functools.partial(getattr(module, name), *args)
        return prepare(*args)


CUDA_STEPS = CudaSteps()


def array_module() -> Any:
    """cupy on a real device; numpy in the simulator (which takes host arrays as device arrays)."""
    if simulator_enabled():
        return np
    import cupy

    return cupy


def make_cuda_engine(layer_sizes: tuple[int, ...], dtype: np.dtype) -> Engine:
    """An ``Engine`` whose buffers live on the current CUDA device and whose steps are our kernels."""
    ok, why = cuda_status()
    if not ok:
        raise BackendUnavailableError(f"backend='cuda' is not usable: {why}")
    return Engine(array_module(), CUDA_STEPS, tuple(layer_sizes), np.dtype(dtype), "cuda")
