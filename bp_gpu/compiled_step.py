"""``MLP.compile_step``: a training step recorded once and replayed for every batch.

A step is a fixed list of prepared calls (``bp_gpu.plan``) reading a batch from fixed buffers, and
an optimizer that keeps its step count and schedule on the device (``bp_gpu.optim.hyper``): nothing a
call reads changes on the host between steps. So the list can be replayed as it is:

- on the CPU (and with the CUDA backend in Numba's simulator) the recorded calls are called again;
- on a GPU the list is captured once into a CUDA graph (``bp_gpu.cuda_graph``) and each step is one
  graph launch: a few microseconds of host time instead of one launch per GEMM and kernel.

Calling the compiled step copies the batch into the fixed buffers (on the device, in stream order),
replays, and returns the loss as a fresh 0-d device array, as ``MLP.train_step`` does; K calls give
the parameters of K ``train_step`` calls bit for bit.

Mixed precision (``bp_gpu.precision``): where the GEMMs read a rounded copy of the batch
(``Engine.rounds_batch``), copying the batch in is rounding it into that copy, one pass, and the
recorded step starts from the copy.
"""

from __future__ import annotations

import numbers
from typing import Any

from . import _validate as V
from .backends import simulator_enabled
from .plan import X as X_SLOT
from .plan import run


class CompiledStep:
    """``step(X, t) -> loss`` for batches of exactly ``batch_size`` rows (see the module docstring).

    Build it with ``net.compile_step(optimizer, batch_size)``. A batch of another size (say the
    last, ragged batch of an epoch) needs its own compiled step, or an eager ``net.train_step``.
    On a GPU it holds a CUDA graph, a stream, and that stream's cuBLAS handle with its 32 MiB
    workspace; they are freed when the step is garbage-collected, which waits for the device.
    """

    def __init__(self, net: Any, optimizer: Any, batch_size: int, reduction: str = "mean") -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
        e = net._engine
        B = int(batch_size)
        self.net, self.optimizer, self.batch_size = net, optimizer, B
        self._engine = e
        xp = e.xp
        self._X = xp.zeros((B, net.layer_sizes[0]), dtype=e.dtype)  # (B, N_0), the recorded input
        self._T = xp.zeros((B, net.layer_sizes[-1]), dtype=e.dtype)  # (B, N_L)
        self._on_gpu = e.name == "cuda" and not simulator_enabled()
        scale = 1.0 / B if reduction == "mean" else 1.0
        e._prepare(B)
        self._staged = e.rounds_batch
        self._stages: dict[Any, Any] = {}  # per stream: the launch rounding a batch into e.batch_copy(B)
        if self._on_gpu:
            from .cuda_graph import capture_step

            self._graph = capture_step(e, optimizer, self._X, self._T, scale, net.positive_class)
        else:
            # A list of its own (the engine's plan cache may evict its copy); the same calls as
            # train_step's, bound to the fixed buffers.
            self._ops = list(e.grad_plan(B, scale, net.positive_class, staged=self._staged))

    def _copy_in(self, dst: Any, src: Any) -> None:
        if V.array_module(dst) is not V.array_module(src):
            dst.set(src)  # host -> device, on the current stream
        else:
            dst[...] = src

    def _stage(self, X: Any) -> None:
        """Round the batch into the engine's batch copy in one pass from X (a host X reaches the
        device through the float32 buffer first)."""
        e = self._engine
        if V.array_module(X) is not V.array_module(self._X):
            self._copy_in(self._X, X)
            X = self._X
        key = e.stream_key()
        stage = self._stages.get(key)
        if stage is None:
            stage = self._stages[key] = e.bind("round_rows", X_SLOT, e.batch_copy(self.batch_size), e.fmt)
        stage(X, None)

    def __call__(self, X: Any, t: Any, *, check_values: bool | None = None) -> Any:
        """Copy (X, t) into the step's buffers, run the recorded step, return the loss (0-d array on
        the backend's device). Inputs are checked as ``MLP.train_step`` checks them."""
        net, B = self.net, self.batch_size
        host = V.array_module(V.as_array(X, self._engine.xp, "X")) is V.np
        xp_in = V.np if host else self._engine.xp
        Xc = V.check_features(X, net.layer_sizes[0], net.dtype, xp_in, values=check_values)
        if Xc.shape[0] != B:
            raise ValueError(
                f"this compiled step takes batches of exactly {B} rows; X has {Xc.shape[0]}. Compile another "
                f"step for that size (net.compile_step(optimizer, {Xc.shape[0]})) or use net.train_step"
            )
        tc = V.check_targets(t, B, net.layer_sizes[-1], net.dtype, xp_in, values=check_values)
        if self._staged:
            self._stage(Xc)
        else:
            self._copy_in(self._X, Xc)
        self._copy_in(self._T, tc)
        if self._on_gpu:
            self._graph.launch()
        else:
            run(self._ops, self._X, self._T)
            self.optimizer.step()
        return self._engine.loss_view.copy()
