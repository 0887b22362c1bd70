"""The autograd Function of ``SigmoidMLP``: forward and backward are bp_gpu's steps on the tensors' memory.

``SigmoidMLPFunction.apply(precision, x, W_1, b_1, ..., W_L, b_L)`` returns the output logits ``a_out``. Its
forward allocates this call's activations as PyTorch tensors (PyTorch's allocator: its caching
allocator on CUDA) and saves them with the inputs (``ctx.save_for_backward``), so any number of
forwards may be outstanding before their backwards (gradient accumulation, the module called twice
in one graph); the backward allocates the gradients it returns to autograd, which adds them into
``.grad``. Nothing is copied: ``bp_gpu.autograd_steps`` runs the engine's GEMMs and fused steps on
the tensors' own memory, seen as the backend's arrays (``Backend.view``).

Backends, by the tensors' device:

- CPU tensors: the CPU backend's fused steps (Numba, single-threaded) on NumPy views of the tensors
  (``Tensor.numpy()``), and PyTorch for the GEMMs (``torch.mm``), the output bias and its column
  sum, on the tensors themselves: NumPy's BLAS would bring a second thread pool into a PyTorch
  process, whose threads and PyTorch's OpenMP threads each busy-wait for cores after a call
  (``bp_gpu.cpu_steps`` says the same of Numba's OpenMP layer). With one thread each, a step with
  NumPy's GEMM measured 2.4-2.8 against 3.1 ms on W1 and 753 against 530 ms on W2
  (bench/RESULTS.md, "SigmoidMLP inside PyTorch").
- CUDA tensors: the CUDA backend (CuPy views through DLPack; ``cublasGemmEx`` and our kernels) on
  PyTorch's current stream, which CuPy is told to use for the call
  (``cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)``), so every GEMM, kernel and
  CuPy op is ordered with PyTorch's work without an event or a wait. In the backward, autograd's
  current stream is the forward's (PyTorch's "stream semantics of backward passes").
- CPU tensors under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): the CUDA backend's host
  code and kernels on NumPy views, as ``backend="cuda"`` runs there: how the tests prove the CUDA
  path's logic without a GPU.

No host synchronisation: nothing reads a device value. DLPack export of a CUDA tensor
(``torch.Tensor.__dlpack__``, torch/_tensor.py at 2.13) synchronises only when the consumer's stream
differs from PyTorch's current one, and then with an event the consumer stream waits on, on the
device; CuPy's ``from_dlpack`` (cupy/_core/dlpack.pyx) passes its current stream, which here is
PyTorch's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import autograd_steps
from ..backends import BackendUnavailableError, cuda_status, simulator_enabled
from ..precision import round_to


class Backend:
    """Where a call runs: ``run`` (the GEMM and fused steps), the tensors as its arrays (``view``)
    and the context a call runs in (``stream``). This one: NumPy views (the simulator's CUDA path)."""

    def __init__(self, run: autograd_steps.Runner) -> None:
        self.run = run

    def view(self, t: torch.Tensor) -> Any:
        """``t``'s memory as an array ``run`` takes, no copy."""
        return _numpy(t)

    def stream(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context a call runs in (CUDA: PyTorch's device and current stream as CuPy's)."""
        return contextlib.nullcontext()


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor's memory as a NumPy array (``detach`` first only where it must: it costs a tensor)."""
    return t.detach().numpy() if t.requires_grad else t.numpy()


class _CpuRun(autograd_steps.Runner):
    """CPU tensors as they are: PyTorch's GEMM and ops, the CPU steps on NumPy views."""

    def gemm(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        if self.precision != "highest":
            a, b = self.rounded(a), self.rounded(b)
        torch.mm(a, b, out=out)

    def rounded(self, a: torch.Tensor) -> torch.Tensor:
        """r(a) as a new tensor (float32 values of the precision's format: bp_gpu.precision's NumPy
        rounding, the CPU backend's spec)."""
        return torch.from_numpy(round_to(_numpy(a), self.fmt))

    def step(self, name: str, *args: Any) -> None:
        # The step's own function (CPU_STEPS.<name>): nothing to prepare on the CPU, so no bind.
        getattr(self.steps, name)(*(_numpy(a) if isinstance(a, torch.Tensor) else a for a in args))

    def column_sum(self, a: torch.Tensor, out: torch.Tensor) -> None:
        torch.sum(a, 0, out=out)


class CpuBackend(Backend):
    """CPU tensors: ``_CpuRun`` on the tensors themselves (the module docstring says why)."""

    def __init__(self, precision: str) -> None:
        from ..cpu_backend import CPU_STEPS

        super().__init__(_CpuRun(CPU_STEPS, precision))

    def view(self, t: torch.Tensor) -> torch.Tensor:
        return t


class _CudaRun(autograd_steps.Runner):
    """The CUDA backend's GEMMs and kernels on CuPy arrays; rounded copies allocated by CuPy (from
    PyTorch's stream's pool order: CuPy's current stream is PyTorch's during a call)."""

    def empty(self, shape: tuple[int, int], dtype: Any) -> Any:
        import cupy

        return cupy.empty(shape, dtype)


class CudaBackend(Backend):
    """CUDA tensors: CuPy views through DLPack, CuPy's current stream set to PyTorch's."""

    def __init__(self, precision: str) -> None:
        import cupy

        from ..cuda_host import CUDA_STEPS

        super().__init__(_CudaRun(CUDA_STEPS, precision))
        self.cupy = cupy
        self._streams: dict[tuple[int, int], Any] = {}

    def view(self, t: torch.Tensor) -> Any:
        return self.cupy.from_dlpack(t.detach())

    @contextlib.contextmanager
    def stream(self, device: torch.device) -> Iterator[None]:
        cp = self.cupy
        index = device.index if device.index is not None else torch.cuda.current_device()
        ptr = torch.cuda.current_stream(index).cuda_stream
        # One CuPy object per PyTorch stream: cuBLAS handles and prepared launches are kept per
        # stream pointer (bp_gpu.cublas_gemm, kernels/_launch.py), not per Python object.
        s = self._streams.get((index, ptr))
        if s is None:
            s = self._streams[(index, ptr)] = cp.cuda.Stream.null if ptr == 0 else cp.cuda.ExternalStream(ptr, index)
        with torch.cuda.device(index), cp.cuda.Device(index), s:
            yield


_backends: dict[tuple[str, str], Backend] = {}


def backend_for(device: torch.device, precision: str = "highest") -> Backend:
    """The backend for tensors on ``device`` in ``precision`` (see the module docstring), built on
    first use."""
    b = _backends.get((device.type, precision))
    if b is None:
        if device.type == "cpu" and simulator_enabled():  # fixed for the process (set before numba.cuda loads)
            from ..cuda_host import CUDA_STEPS

            b = Backend(autograd_steps.Runner(CUDA_STEPS, precision))
        elif device.type == "cpu":
            b = CpuBackend(precision)
        else:  # "cuda"; the module has refused other devices before a call gets here
            ok, why = cuda_status()
            if not ok:
                raise BackendUnavailableError(f"SigmoidMLP on CUDA tensors needs bp_gpu's CUDA backend: {why}")
            b = CudaBackend(precision)
        _backends[(device.type, precision)] = b
    return b


class SigmoidMLPFunction(torch.autograd.Function):
    """``apply(precision, x, W_1, b_1, ..., W_L, b_L) -> a_out``: x (B, N_0) C-contiguous; W_l
    (N_l, N_{l-1}), b_l (N_l,) C-contiguous, of x's dtype on x's device (``SigmoidMLP.forward``
    checks all of it); ``precision`` one of ``bp_gpu.precision.PRECISIONS``."""

    @staticmethod
    def forward(ctx: Any, precision: str, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        Ws, bs = params[0::2], params[1::2]
        B, dev, dt = x.shape[0], x.device, x.dtype
        Z = [torch.empty((B, W.shape[0]), dtype=dt, device=dev) for W in Ws[:-1]]  # (B, N_l) hidden
        A = torch.empty((B, Ws[-1].shape[0]), dtype=dt, device=dev)  # (B, N_L)
        ctx.save_for_backward(x, *Ws, *Z)
        ctx.precision = precision
        if B == 0:  # no rows: nothing to compute (and cuBLAS refuses leading dimensions of 0)
            return A
        back = backend_for(dev, precision)
        v = back.view
        with back.stream(dev):
            autograd_steps.forward(back.run, v(x), [(v(W), v(b)) for W, b in zip(Ws, bs)], [v(z) for z in Z], v(A))
        return A

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, *rest = ctx.saved_tensors
        L = len(rest) // 2 + 1
        Ws, Z = rest[:L], rest[L:]
        needs = ctx.needs_input_grad[1:]  # (x, W_1, b_1, ..., W_L, b_L) after the precision
        B, dev, dt = x.shape[0], x.device, x.dtype
        grads = [(torch.empty_like(W), torch.empty(W.shape[0], dtype=dt, device=dev)) for W in Ws]
        dX = torch.empty_like(x) if needs[0] else None
        if B == 0:
            for dW, db in grads:
                dW.zero_()
                db.zero_()
        else:
            G = [torch.empty_like(z) for z in Z]  # (B, N_l): the hidden layers' deltas
            back = backend_for(dev, ctx.precision)
            v = back.view
            D = grad if grad.is_contiguous() else grad.contiguous()  # e.g. expanded from a sum's scalar
            with back.stream(dev):
                autograd_steps.backward(
                    back.run, v(D), v(x), [(v(W), None) for W in Ws], [v(z) for z in Z],
                    [(v(dW), v(db)) for dW, db in grads], [v(g) for g in G],
                    None if dX is None else v(dX), weight_grads=needs[1::2],
                )
        out: list[torch.Tensor | None] = [None, dX]  # nothing for the precision
        for (dW, db), need_W, need_b in zip(grads, needs[1::2], needs[2::2]):
            out += [dW if need_W else None, db if need_b else None]
        return tuple(out)
