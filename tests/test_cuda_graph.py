"""Capturing a step into a CUDA graph (``bp_gpu.cuda_graph``), without a GPU: the bookkeeping of
what a capture owns, and a capture that fails.

CuPy, its cuBLAS binding and the device are stand-ins that record what is done to them; the
engine and the optimizer bind as the real ones do (a GEMM takes the current stream's cuBLAS
handle, a reducing kernel the stream's workspace). What the real device does with a graph is the
device check's "capture" part (``bench/device_check.py``).
"""

import gc
import sys
import types
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
from bp_gpu.kernels import _launch

from bp_gpu import cublas_gemm, cuda_graph


class _Device:
    """CuPy's view of the device: the current stream, the calls that wait for the device, handles."""

    def __init__(self):
        self.streams = []  # the current stream stack (`with stream:`); empty: the null stream
        self.synchronized = 0
        self.created, self.destroyed = [], []
        self.fail_in_capture = None  # an exception the optimizer's op raises while capturing
        self.null = _Stream(ptr=0)
        self.made = []  # weak references to the streams made since

    def current(self):
        return self.streams[-1] if self.streams else self.null


class _Stream:
    _next_ptr = 0x9000

    def __init__(self, non_blocking=False, ptr=None):
        _Stream._next_ptr += 0x100
        self.ptr, self.non_blocking = _Stream._next_ptr if ptr is None else ptr, non_blocking
        self.capturing = self.invalidated = False
        if ptr is None:
            DEVICE.made.append(weakref.ref(self))

    def record(self):
        return object()

    def wait_event(self, event):
        pass

    def synchronize(self):
        pass

    def begin_capture(self):
        self.capturing = True

    def end_capture(self):
        self.capturing = False
        if self.invalidated:  # as cudaStreamEndCapture of an invalidated capture
            raise RuntimeError("cudaErrorStreamCaptureInvalidated: operation failed due to a previous error")
        return SimpleNamespace(launch=lambda stream: None)

    def __enter__(self):
        DEVICE.streams.append(self)
        return self

    def __exit__(self, *exc):
        DEVICE.streams.pop()
        return False


DEVICE = None


@pytest.fixture
def device(monkeypatch):
    global DEVICE
    DEVICE = d = _Device()
    cupy = types.ModuleType("cupy")
    cupy.uint8 = np.uint8
    cupy.zeros = np.zeros
    cupy.copyto = np.copyto
    cupy.empty = lambda n, dtype=None: SimpleNamespace(data=SimpleNamespace(ptr=0xA000 + len(d.created)))

    def synchronize():
        d.synchronized += 1

    class _CudaDevice:
        def __init__(self, device_id=0):
            self.id = device_id

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    cupy.cuda = SimpleNamespace(Stream=_Stream, get_current_stream=d.current, Device=_CudaDevice,
                                runtime=SimpleNamespace(getDevice=lambda: 0, deviceSynchronize=synchronize))
    libs = types.ModuleType("cupy_backends.cuda.libs")

    def create():
        d.created.append(0x5EED + len(d.created))
        return d.created[-1]

    libs.cublas = SimpleNamespace(create=create, destroy=d.destroyed.append)
    for name, module in {"cupy": cupy, "cupy_backends": types.ModuleType("cupy_backends"),
                         "cupy_backends.cuda": types.ModuleType("cupy_backends.cuda"),
                         "cupy_backends.cuda.libs": libs, "cupy_backends.cuda.libs.cublas": libs.cublas}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(cublas_gemm, "_lib", SimpleNamespace(cublasSetStream_v2=lambda h, s: 0,
                                                             cublasSetWorkspace_v2=lambda h, p, n: 0))
    monkeypatch.setattr(cublas_gemm, "_handles", {})
    monkeypatch.setattr(_launch, "_cupy", cupy)
    monkeypatch.setattr(_launch, "_workspaces", {})
    monkeypatch.setattr(_launch, "_streams", {})
    monkeypatch.setattr(_launch, "max_blocks", lambda *a, **k: 4)
    return d


class _Engine:
    """The engine's side of a capture: its step's calls, bound on the current stream."""

    rounds_batch = False  # precision="highest": the plan reads the batch itself

    def __init__(self):
        self.params, self.loss_buf = np.zeros(5), np.zeros(2)

    def _grad_ops(self, B, scale, positive_class, staged=False):
        cublas_gemm.handle_for_current_stream()  # what PreparedGemm does when it is bound
        _launch.reduction_workspace(4)  # what a reducing kernel's launch does when it is prepared
        return [lambda X, T: None]


class _Optimizer:
    def __init__(self):
        self.state, self.hyper = np.zeros((2, 5)), np.zeros(4)

    def device_buffers(self):
        return self.state, self.hyper

    def _bind(self):
        def update():
            stream = DEVICE.current()
            if DEVICE.fail_in_capture is not None and stream.capturing:
                stream.invalidated = True  # what a failing call does to a capture
                raise DEVICE.fail_in_capture

        return [update]


def _capture():
    X, T = np.zeros((3, 2)), np.zeros((3, 1))
    return cuda_graph.capture_step(_Engine(), _Optimizer(), X, T, 1 / 3, 1)


def _capture_stream_state():
    """(streams with a cuBLAS handle, streams with kernel workspaces), by pointer, besides the null stream."""
    handles = {ptr for (_, ptr) in cublas_gemm._handles if ptr}
    workspaces = {k[1] for k in _launch._workspaces if k[1]}
    return handles, workspaces


def test_a_compiled_step_frees_its_stream_handle_and_workspaces_with_it(device):
    eager = cublas_gemm.handle_for_current_stream()  # an eager step's, on the null stream: kept
    step = _capture()
    stream = device.made[0]()  # the capture's
    assert stream.non_blocking and stream.ptr != 0
    assert _capture_stream_state() == ({stream.ptr}, {stream.ptr})
    del step, stream
    gc.collect()
    assert device.synchronized == 1  # a replay may have been in flight
    assert device.destroyed == [device.created[1]]  # the capture stream's handle, not the eager one
    assert _capture_stream_state() == (set(), set()) and cublas_gemm._handles == {(0, 0): eager}
    assert [r() for r in device.made] == [None]  # the capture stream itself


def test_a_failed_capture_is_ended_and_raises_its_first_error(device):
    device.fail_in_capture = ValueError("a kernel launch failed during capture")
    with pytest.raises(ValueError, match="a kernel launch failed during capture") as info:
        _capture()
    assert not device.made[0]().capturing  # ended before the error was raised
    if sys.version_info >= (3, 11):
        assert any("cudaErrorStreamCaptureInvalidated" in n for n in info.value.__notes__)
    del info
    device.fail_in_capture = None  # the exception's traceback holds the capture's frames
    gc.collect()
    # Nothing the capture bound outlives it.
    assert device.destroyed == device.created and _capture_stream_state() == (set(), set())
    assert [r() for r in device.made] == [None] and device.streams == []
