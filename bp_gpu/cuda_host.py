"""The CUDA backend's host layer: CuPy buffers and cuBLAS GEMMs, Numba kernels for the fused steps.

``make_cuda_engine`` builds the same ``bp_gpu.engine.Engine`` the CPU backend uses, with
``xp = cupy`` and ``steps = CUDA_STEPS``: the four launchers of ``bp_gpu.kernels``, which have the
signatures and in-place semantics of ``bp_gpu.steps_numpy``. Every buffer (parameters, gradients,
activations, deltas, loss, reduction workspaces) is allocated once per (architecture, batch
capacity); a training step then only enqueues GEMMs and kernels on CuPy's current stream: no
allocation of device memory, no host-device copy, no host synchronization (the loss stays on the
device until the caller reads it).

Per layer and step: forward = 1 GEMM + 1 launch; backward = 2 GEMMs + 1 or 2 launches (the second
is the fixed-order stage of the bias-gradient reduction, skipped when one row of blocks covers the
batch); the output layer 1 or 2 launches; the optimizer 1 launch for all layers.

With ``NUMBA_ENABLE_CUDASIM=1`` the same host code runs with ``xp = numpy`` and the kernels run in
Numba's simulator: how the tests prove this backend on machines without a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import BackendUnavailableError, cuda_status, simulator_enabled
from .cublas_gemm import PreparedGemm
from .engine import Engine
from .kernels.bias_sigmoid_forward import bias_sigmoid_forward as _bias_sigmoid_forward
from .kernels.lamb_update import lamb_update as _lamb_update
from .kernels.optimizer_update import optimizer_update as _optimizer_update
from .kernels.output_loss_delta import output_loss_delta as _output_loss_delta
from .kernels.sigmoid_delta_backward import sigmoid_delta_backward as _sigmoid_delta_backward
from .plan import Op, bind_call


class CudaSteps:
    """The fused steps of ``bp_gpu.steps_numpy``, as Numba CUDA launchers, and ``bind``.

    Each takes device arrays (CuPy; NumPy in the simulator), writes its outputs in place and
    returns nothing; launches go on CuPy's current stream. ``bind`` prepares one call of a step
    (``bp_gpu.plan``) for the current stream: GEMMs as ``bp_gpu.cublas_gemm.PreparedGemm``.
    """

    def stream_key(self) -> int:
        """CuPy's current stream: prepared calls are bound to the stream they were prepared on, so
        plans are kept per stream."""
        if simulator_enabled():
            return 0
        import cupy

        return cupy.cuda.get_current_stream().ptr

    def bind(self, name: str, *args: Any) -> Op:
        """One prepared call of step ``name`` (or ``"matmul"``: ``out <- a @ b``)."""
        if name == "matmul":
            if simulator_enabled():
                return bind_call(_host_matmul, *args)
            gemm = PreparedGemm(*args)
            return lambda X, T: gemm(X)
        return bind_call(getattr(self, name), *args)

    bias_sigmoid_forward = staticmethod(_bias_sigmoid_forward)
    output_loss_delta = staticmethod(_output_loss_delta)
    sigmoid_delta_backward = staticmethod(_sigmoid_delta_backward)
    optimizer_update = staticmethod(_optimizer_update)
    lamb_update = staticmethod(_lamb_update)


def _host_matmul(a: Any, b: Any, out: Any) -> None:
    """The simulator's GEMM (its arrays are NumPy arrays)."""
    np.matmul(a, b, out=out)


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
