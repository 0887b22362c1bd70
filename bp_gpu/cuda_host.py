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
gradient, loss and the running loss sum); the optimizer 1 launch for all layers (LAMB 2). GEMMs are
``cublasGemmEx`` calls prepared once (``bp_gpu.cublas_gemm``), which a CUDA graph can capture.

Mixed precision (``bp_gpu.precision``): ``"bf16"`` keeps bfloat16 copies (uint16 arrays, rows padded
to 8 elements: 16 bytes) of every GEMM operand, written by the ``*_round`` launches beside the
float32 outputs, and its GEMMs read them as ``CUDA_R_16BF``; ``"tf32"`` keeps none, its GEMMs round
their float32 operands themselves (``CUBLAS_COMPUTE_32F_FAST_TF32``) and the outer-product step
rounds its two factors. See ``bp_gpu.cublas_gemm`` for the types and alignment.

With ``NUMBA_ENABLE_CUDASIM=1`` the same host code runs with ``xp = numpy`` and the kernels run in
Numba's simulator: how the tests prove this backend on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import precision as _precision
from .backends import BackendUnavailableError, cuda_status, simulator_enabled
from .cublas_gemm import PreparedGemm
from .engine import Engine
from .kernels import _launch
from .kernels import bias_sigmoid_forward as _forward
from .kernels import lamb_update as _lamb
from .kernels import optimizer_update as _optimizer
from .kernels import outer_sigmoid_delta_backward as _outer
from .kernels import output_loss_delta as _output
from .kernels import round_rows as _round
from .kernels import sigmoid_delta_backward as _backward
from .plan import Op, Slot, bind_call
from .plan import T as T_SLOT
from .plan import X as X_SLOT


class _PreparedPerInput:
    """A prepared launch whose arguments include the batch (a ``bp_gpu.plan`` slot): prepared for
    the first batch array, then pointed at each new one (``rebind``: on a device one pointer written
    into the parameter buffer, no checks, typing or packing), so a user's loop passing a fresh array
    every step pays no preparation. Prepared again only for an array of another layout."""

    def __init__(self, prepare: Callable[..., Callable[[], None]], args: tuple) -> None:
        self.prepare, self.args = prepare, args
        self.uses_x = any(a is X_SLOT for a in args)
        self.uses_t = any(a is T_SLOT for a in args)
        self.X: Any = None
        self.T: Any = None
        self.launch: Callable[[], None] | None = None

    def __call__(self, X: Any, T: Any) -> None:
        if self.launch is None or (self.uses_x and X is not self.X) or (self.uses_t and T is not self.T):
            self._point_at(X, T)
        self.launch()

    def _point_at(self, X: Any, T: Any) -> None:
        rebind = getattr(self.launch, "rebind", None)
        ok = rebind is not None
        if ok and self.uses_x and X is not self.X:
            ok = rebind(self.X, X)
        if ok and self.uses_t and T is not self.T:
            ok = rebind(self.T, T)
        if not ok:  # first call, another layout, or a launch that cannot rebind: prepare it for these
            self.launch = self.prepare(*(X if a is X_SLOT else T if a is T_SLOT else a for a in self.args))
        self.X, self.T = X, T


class CudaSteps:
    """The fused steps of ``bp_gpu.steps_numpy``, as Numba CUDA launchers, and ``bind``.

    Each takes device arrays (CuPy; NumPy in the simulator), writes its outputs in place and
    returns nothing; launches go on CuPy's current stream. ``bind`` prepares one call of a step
    (``bp_gpu.plan``) for the current stream: a kernel as its module's ``prepare_<step>`` (checked,
    planned and packed once; calling it only enqueues the launch), a GEMM as
    ``bp_gpu.cublas_gemm.PreparedGemm``.
    """

    bias_sigmoid_forward = staticmethod(_forward.bias_sigmoid_forward)
    output_loss_delta = staticmethod(_output.output_loss_delta)
    sigmoid_delta_backward = staticmethod(_backward.sigmoid_delta_backward)
    outer_sigmoid_delta_backward = staticmethod(_outer.outer_sigmoid_delta_backward)
    optimizer_update = staticmethod(_optimizer.optimizer_update)
    lamb_update = staticmethod(_lamb.lamb_update)
    bias_sigmoid_forward_round = staticmethod(_forward.bias_sigmoid_forward_round)
    output_loss_delta_round = staticmethod(_output.output_loss_delta_round)
    sigmoid_delta_backward_round = staticmethod(_backward.sigmoid_delta_backward_round)
    outer_sigmoid_delta_backward_round = staticmethod(_outer.outer_sigmoid_delta_backward_round)
    optimizer_update_round = staticmethod(_optimizer.optimizer_update_round)
    lamb_update_round = staticmethod(_lamb.lamb_update_round)
    round_rows = staticmethod(_round.round_rows)
    take_rows_round = staticmethod(_round.take_rows_round)
    round_weights = staticmethod(_round.round_weights)

    _MODULES = {
        "bias_sigmoid_forward": _forward,
        "output_loss_delta": _output,
        "sigmoid_delta_backward": _backward,
        "outer_sigmoid_delta_backward": _outer,
        "optimizer_update": _optimizer,
        "lamb_update": _lamb,
        "bias_sigmoid_forward_round": _forward,
        "output_loss_delta_round": _output,
        "sigmoid_delta_backward_round": _backward,
        "outer_sigmoid_delta_backward_round": _outer,
        "optimizer_update_round": _optimizer,
        "lamb_update_round": _lamb,
        "round_rows": _round,
        "take_rows_round": _round,
        "round_weights": _round,
    }

    def operand_copies(self, precision: str) -> tuple[np.dtype, int] | None:
        """(dtype, row alignment in elements) of the rounded copies the engine keeps of every GEMM
        operand: bfloat16 bits (uint16) in rows of a multiple of 8 elements, 16 bytes, cuBLAS's
        tensor-core alignment, for ``"bf16"``; none for ``"tf32"`` (cuBLAS rounds) and ``"highest"``."""
        return (np.dtype(np.uint16), 8) if precision == "bf16" else None

    def stream_key(self) -> int:
        """CuPy's current stream: prepared calls are bound to the stream they were prepared on, so
        plans are kept per stream (0 in the simulator)."""
        return _launch._stream_ptr()

    def bind(self, name: str, *args: Any) -> Op:
        """One prepared call of step ``name`` on ``args`` (the step's own arguments, slots allowed),
        or of ``"matmul"`` (``out <- a @ b``; uint16 operands are bfloat16 copies, and a fourth
        argument ``"tf32"`` has cuBLAS round float32 operands to TF32). It keeps its arrays alive and
        always writes into them: bind again for other arrays, shapes or scalars."""
        if name == "matmul":
            if simulator_enabled():
                return bind_call(_host_matmul, *args)
            gemm = PreparedGemm(*args)
            return lambda X, T: gemm(X)
        module = self._MODULES.get(name)
        if module is None:
            raise ValueError(f"CudaSteps.bind: no step named {name!r}; steps: matmul, {', '.join(self._MODULES)}")
        prepare = getattr(module, f"prepare_{name}")
        if any(isinstance(a, Slot) for a in args):
            return _PreparedPerInput(prepare, args)
        launch = prepare(*args)
        return lambda X, T: launch()


def _host_matmul(a: Any, b: Any, out: Any, precision: str = "highest") -> None:
    """The simulator's GEMM (its arrays are NumPy arrays), computing what cuBLAS is asked for:
    bfloat16 operands (uint16 bits) decoded exactly to float32; with ``"tf32"`` float32 operands
    rounded to TF32 as the contract says (``bp_gpu.precision.round_tf32``); products in float32."""
    if a.dtype == np.uint16:
        a, b = _precision.from_bf16_bits(a), _precision.from_bf16_bits(b)
    elif precision == "tf32":
        a, b = _precision.round_tf32(a), _precision.round_tf32(b)
    np.matmul(a, b, out=out)


CUDA_STEPS = CudaSteps()


def array_module() -> Any:
    """cupy on a real device; numpy in the simulator (which takes host arrays as device arrays)."""
    if simulator_enabled():
        return np
    import cupy

    return cupy


def make_cuda_engine(layer_sizes: tuple[int, ...], dtype: np.dtype, precision: str = "highest") -> Engine:
    """An ``Engine`` whose buffers live on the current CUDA device and whose steps are our kernels."""
    ok, why = cuda_status()
    if not ok:
        raise BackendUnavailableError(f"backend='cuda' is not usable: {why}")
    return Engine(array_module(), CUDA_STEPS, tuple(layer_sizes), np.dtype(dtype), "cuda", precision)
