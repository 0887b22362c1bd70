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
  copies made there. Its own stream, not one shared by every compiled step: the calls bound on it
  share that stream's reduction workspaces, and two graphs replayed at once on two streams must not.
- A failed capture is ended before its error is raised: ``cudaStreamEndCapture`` of an invalidated
  capture fails too (``cudaErrorStreamCaptureInvalidated``), and the first error is the one that
  says what went wrong.
- What the capture stream holds is freed with the step, when it is garbage-collected (after waiting
  for the device: a replay may be in flight): the graph, its cuBLAS handle and 32 MiB workspace
  (``cublas_gemm``), the kernels' cached workspaces and Numba stream for it (``kernels._launch``),
  the stream itself; and so is all of it when compiling fails.
"""

from __future__ import annotations

import weakref
from typing import Any

from .plan import run


class _Resources:
    """What a captured step owns: the graph, the prepared calls and buffers it reads and writes,
    and its capture stream with what is cached for that stream."""

    def __init__(self, stream: Any, device: int) -> None:
        self.stream, self.device, self.graph, self.keep = stream, device, None, ()

    def release(self) -> None:
        """Wait for the step's device (a replay may be in flight on any of its streams), then let
        everything go back: what the graph reads and writes only after the wait."""
        import cupy

        from . import cublas_gemm
        from .kernels import _launch

        with cupy.cuda.Device(self.device):
            cupy.cuda.runtime.deviceSynchronize()
        self.graph = self.keep = None
        cublas_gemm.release_stream_handle(self.stream)
        _launch.release_stream(self.stream.ptr)
        self.stream = None


class CapturedStep:
    """A captured step: ``launch()`` replays it on CuPy's current stream. Its resources are freed
    when it is garbage-collected (see the module docstring)."""

    def __init__(self, resources: _Resources) -> None:
        self._resources = resources
        weakref.finalize(self, resources.release).atexit = False  # at exit CUDA goes with the process

    def launch(self) -> None:
        import cupy

        self._resources.graph.launch(cupy.cuda.get_current_stream())


def capture_step(engine: Any, optimizer: Any, X: Any, T: Any, scale: float, positive_class: int) -> CapturedStep:
    """Capture forward, backward and the optimizer update of a batch in the fixed buffers X (B, N_0),
    T (B, N_L) (capacity already >= B)."""
    import cupy

    B = X.shape[0]
    caller = cupy.cuda.get_current_stream()
    resources = _Resources(cupy.cuda.Stream(non_blocking=True), cupy.cuda.Device().id)
    try:
        resources.graph, resources.keep = _capture(engine, optimizer, X, T, B, scale, positive_class,
                                                   resources.stream, caller)
    except BaseException as first:
        try:
            resources.release()
        except Exception as second:  # a sticky CUDA error raises again in the wait
            _note(first, "freeing the capture's resources", second)
        raise
    return CapturedStep(resources)


def _note(first: BaseException, what: str, second: Exception) -> None:
    if hasattr(first, "add_note"):  # Python >= 3.11
        first.add_note(f"{what} raised too: {type(second).__name__}: {second}")


def _capture(engine: Any, optimizer: Any, X: Any, T: Any, B: int, scale: float, positive_class: int,
             stream: Any, caller: Any) -> tuple[Any, tuple]:
    """(graph, what it reads and writes): the calls bound on ``stream``, warmed up, restored, captured."""
    import cupy

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
        except BaseException as first:
            try:
                stream.end_capture()  # out of capture mode, the half-captured graph dropped
            except Exception as second:  # an invalidated capture fails to end too
                _note(first, "ending the failed capture", second)
            raise
        graph = stream.end_capture()
    return graph, (ops, opt_ops, X, T)
