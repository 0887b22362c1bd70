"""A training step captured once into a CUDA graph (CuPy stream capture), for ``MLP.compile_step``.

Everything a captured step reads that changes between steps is in device memory: the batch in the
compiled step's fixed buffers, the step count and scheduled rate in the optimizer's ``hyper``
buffer (``bp_gpu.optim.hyper``). So the graph is captured once and replayed.

Capture rules followed here (read from CuPy 14.2 and the CUDA/cuBLAS docs; this path runs only on a
GPU, so the ``gpu`` tests and ``bench/device_check.py`` check it):

- Nothing is allocated during capture: the calls are bound first (prepared Numba launches with their
  argument views and workspaces, ``cublas_gemm.PreparedGemm`` with its private handle, stream and
  workspace), on the capture stream, before ``begin_capture`` (CuPy's pool may ``cudaMalloc`` in a
  relaxed capture, and the block would be reused by replays: cupy/cuda/memory.pyx).
- No cuBLAS call through CuPy (``cupy.matmul`` raises during capture: cupy_backends/cuda/libs/
  cublas.pyx ``setStream``); the GEMMs go through ``cublasGemmEx`` directly.
- A warm-up step runs eagerly first (kernels compiled and loaded, cuBLAS's kernel choice made outside
  the capture), and every buffer it changes — parameters, optimizer state and ``hyper``, the loss
  buffer — is restored after it, so compiling a step changes nothing.
- Capture on a stream of its own (non-blocking: no implicit sync with the legacy stream, which would
  invalidate the capture); the graph is replayed on the caller's current stream, after the batch
  copies made there.
"""

from __future__ import annotations

from typing import Any

from .plan import run


class CapturedStep:
    """A captured step: ``launch()`` replays it on CuPy's current stream."""

    def __init__(self, graph: Any, keep: tuple) -> None:
        self.graph = graph
        self._keep = keep  # the prepared calls and the buffers the graph reads and writes

    def launch(self) -> None:
        import cupy

        self.graph.launch(cupy.cuda.get_current_stream())


def capture_step(engine: Any, optimizer: Any, X: Any, T: Any, scale: float, positive_class: int) -> CapturedStep:
    """Capture forward, backward and the optimizer update of a batch in the fixed buffers X (B, N_0),
    T (B, N_L) (capacity already >= B)."""
    import cupy

    B = X.shape[0]
    stream = cupy.cuda.Stream(non_blocking=True)
    caller = cupy.cuda.get_current_stream()
    stream.wait_event(caller.record())  # the buffers' initial writes come first
    with stream:
        # Bound to this stream, not the engine's cached plan; with a rounded batch copy, the caller
        # rounds the batch into it before each replay (compiled_step), so the graph starts there.
        ops = engine._grad_ops(B, scale, positive_class, staged=engine.rounds_batch)
        opt_ops = optimizer._bind()
        changed = [engine.params, *optimizer.device_buffers(), engine.loss_buf]
        saved = [a.copy() for a in changed]
        run(ops, X, T)
        for op in opt_ops:
            op()
        for dst, src in zip(changed, saved):
            cupy.copyto(dst, src)
        stream.synchronize()
        stream.begin_capture()
        try:
            run(ops, X, T)
            for op in opt_ops:
                op()
        finally:
            graph = stream.end_capture()
    return CapturedStep(graph, (ops, opt_ops, stream, X, T))
