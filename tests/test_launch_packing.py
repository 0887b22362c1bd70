"""Pre-packed kernel launches (``_launch.pack_arguments``, ``_launch.prepared``), without a GPU.

The parameter buffer is built from Numba's own ``_Kernel._prepare_args`` (the code its launches
run) on stand-ins for device arrays, then read back through the ``void*[]`` that
``cuLaunchKernel`` would receive. The launch itself is a recorded stand-in for the driver call.
"""

import ctypes
import warnings
from types import SimpleNamespace

import numba
import numba_cuda
import numpy as np
import pytest
from bp_gpu.kernels import _launch

if not numba_cuda.__version__.startswith(_launch._PACKED_LAUNCH_VERSIONS):
    # Other versions launch through Numba's dispatcher; the internals used below may not exist.
    pytest.skip(f"numba-cuda {numba_cuda.__version__}: pre-packed launches not checked for it",
                allow_module_level=True)

from cuda.bindings import driver as cu  # noqa: E402
from numba.cuda.cudadrv.devicearray import _StridedLayoutShim, _StridedMemoryViewShim  # noqa: E402
from numba.cuda.dispatcher import _Kernel  # noqa: E402


class _DeviceArray:
    """What Numba's launch path reads of a device array (``_to_strided_memory_view``)."""

    __cuda_memory__ = True

    def __init__(self, ptr, shape, dtype):
        dtype = np.dtype(dtype)
        strides = tuple(int(s) for s in np.empty(shape, dtype).strides)
        self._strided_memory_view_shim = _StridedMemoryViewShim(
            ptr=ptr, shape=tuple(shape), dtype=dtype, size=int(np.prod(shape)),
            _layout=_StridedLayoutShim(strides_in_bytes=strides, is_contiguous_c=True,
                                       is_contiguous_f=len(shape) < 2, is_contiguous_any=True),
        )


class _Library:
    def get_cufunc(self):
        return type("cufunc", (), {"handle": 0xF00D})()


class _FakeKernel:
    """A compiled kernel's launch-relevant surface, with Numba's real argument preparation."""

    _prepare_args = _Kernel._prepare_args
    extensions: list = []
    debug = cooperative = launch_config_sensitive = False
    _codelibrary = _Library()
    py_func = staticmethod(lambda: None)

    def __init__(self, argument_types):
        self.argument_types = argument_types
        self.bound = 0

    def bind(self):
        self.bound += 1


F32 = numba.float32
# The output step's signature: A, b, T, positive_class, scale, D, db, loss, ws.
TYPES = (F32[:, ::1], F32[::1], F32[:, ::1], numba.int64, numba.float64, F32[:, ::1], F32[::1],
         numba.float64[::1], numba.float64[::1])


def _args():
    return [
        _DeviceArray(0x1000, (7, 3), np.float32), _DeviceArray(0x2000, (3,), np.float32),
        _DeviceArray(0x3000, (7, 3), np.float32), 1, 0.125, _DeviceArray(0x4000, (7, 3), np.float32),
        _DeviceArray(0x5000, (3,), np.float32), _DeviceArray(0x6000, (2,), np.float64),
        _DeviceArray(0x7000, (99,), np.float64),
    ]


def _expected():
    """The parameter values, by hand: per array meminfo, parent, size, itemsize, data, shape, strides."""
    out = []
    for a in _args():
        if isinstance(a, _DeviceArray):
            v = a._strided_memory_view_shim
            out += [0, 0, v.size, v.dtype.itemsize, v.ptr, *v.shape, *v._layout.strides_in_bytes]
        else:
            out.append(a)
    return out


def _read_params(address, n, scalar_kinds):
    """The n parameter values behind a void*[] at address; scalar_kinds: index -> ctypes type."""
    slots = (ctypes.c_void_p * n).from_address(address)
    return [scalar_kinds.get(i, ctypes.c_ssize_t).from_address(slots[i]).value for i in range(n)]


# In the 57 parameter values (9 per 2-D array, 7 per 1-D array): A, b, T take 0-24, then
# positive_class (int64) and scale (double).
SCALARS = {25: ctypes.c_int64, 26: ctypes.c_double}


def test_packed_parameters_equal_numbas_own_preparation():
    kernel = _FakeKernel(TYPES)
    numba_values = []
    for ty, val in zip(TYPES, _args()):
        _Kernel._prepare_args(kernel, ty, val, 0, [], numba_values)
    address, keep, pointers = _launch.pack_arguments(kernel, _args())
    want = _expected()
    assert len(numba_values) == len(want) == 57
    assert [v.value if isinstance(v, ctypes._SimpleCData) else v for v in numba_values] == want
    assert _read_params(address, len(want), SCALARS) == want
    assert isinstance(numba_values[25], ctypes.c_int64) and isinstance(numba_values[26], ctypes.c_double)


def test_pack_arguments_refuses_copies_and_unknown_values():
    class _Copying(_FakeKernel):
        def _prepare_args(self, ty, val, stream, retr, values):
            retr.append(lambda: None)  # what Numba does for a host array: copy back after the launch
            values.append(0)

    with pytest.raises(TypeError, match="not device memory"):
        _launch.pack_arguments(_Copying((F32[::1],)), [np.zeros(3, np.float32)])

    class _Odd(_FakeKernel):
        def _prepare_args(self, ty, val, stream, retr, values):
            values.append(object())

    with pytest.raises(TypeError, match="unexpected kernel parameter value"):
        _launch.pack_arguments(_Odd((F32[::1],)), [None])


@pytest.fixture
def device(monkeypatch):
    """A device stand-in: CuPy's current stream 0x77, the driver's cuLaunchKernel recorded."""
    launches = []

    def launch_kernel(f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        launches.append(dict(f=int(f), grid=(gx, gy, gz), block=(bx, by, bz), shared=shared,
                             stream=int(stream), extra=extra, values=_read_params(params, 57, SCALARS)))
        return (launches[-1].get("err", cu.CUresult.CUDA_SUCCESS),)

    monkeypatch.setattr(_launch, "_stream_ptr", lambda: 0x77)
    monkeypatch.setattr(_launch, "stream", lambda: 0)
    monkeypatch.setattr(cu, "cuLaunchKernel", launch_kernel)
    return launches


def test_prepared_launch_is_one_driver_call_with_the_packed_buffer(device):
    kernel = _FakeKernel(TYPES)
    owners = (object(),)
    launch = _launch.prepared(None, kernel, (2, 3), (32, 8), _args(), owners)
    assert kernel.bound == 1 and device == []  # preparing launches nothing
    launch()
    launch()
    assert len(device) == 2
    assert device[0] == dict(f=0xF00D, grid=(2, 3, 1), block=(32, 8, 1), shared=0, stream=0x77, extra=0,
                             values=_expected())
    assert launch.keep_alive[1] == list(owners)


def test_a_failed_launch_raises(device, monkeypatch):
    monkeypatch.setattr(cu, "cuLaunchKernel", lambda *a: (cu.CUresult.CUDA_ERROR_INVALID_CONTEXT,))
    launch = _launch.prepared(None, _FakeKernel(TYPES), 4, 256, _args(), ())
    with pytest.raises(RuntimeError, match="cuLaunchKernel failed: .*INVALID_CONTEXT"):
        launch()


def test_unexpected_internals_fall_back_to_the_dispatcher_once_warned(device, monkeypatch):
    from numba.cuda.core.errors import NumbaPerformanceWarning

    calls = []

    class _Dispatcher:
        def __getitem__(self, config):
            msg = "Grid size 4 will likely result in GPU under-utilization"  # as numba-cuda's
            warnings.warn(msg, NumbaPerformanceWarning, stacklevel=2)
            return lambda *args: calls.append((config, args))

    kernel = _FakeKernel(TYPES)
    kernel.debug = True  # _Kernel.launch would check for device exceptions: not ours to replicate
    monkeypatch.setattr(_launch, "_warned_fallback", False)
    with pytest.warns(RuntimeWarning, match="pre-packed kernel launches are unavailable"):
        launch = _launch.prepared(_Dispatcher(), kernel, (2, 2), (8, 4), _args(), ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither the fallback warning again nor low occupancy
        again = _launch.prepared(_Dispatcher(), kernel, (2, 2), (8, 4), _args(), ())
    launch()
    again()
    assert device == [] and len(calls) == 2
    assert calls[0][0] == ((2, 2, 1), (8, 4, 1), 0) and len(calls[0][1]) == 9


def test_an_unchecked_numba_cuda_version_falls_back(device, monkeypatch):
    monkeypatch.setattr(numba_cuda, "__version__", "0.99.0")
    monkeypatch.setattr(_launch, "_warned_fallback", False)

    class _Dispatcher:
        def __getitem__(self, config):
            return lambda *args: None

    with pytest.warns(RuntimeWarning, match="numba-cuda 0.99.0 is not a version whose launch path was checked"):
        _launch.prepared(_Dispatcher(), _FakeKernel(TYPES), 1, 32, _args(), ())()
    assert device == []


def _cupy_like(ptr, shape, dtype=np.float32):
    """What ``rebind`` reads of a CuPy array."""
    a = np.empty(shape, dtype)
    return SimpleNamespace(data=SimpleNamespace(ptr=ptr), shape=a.shape, strides=a.strides, dtype=a.dtype)


def test_rebind_points_the_packed_buffer_at_a_new_array(device):
    launch = _launch.prepared(None, _FakeKernel(TYPES), 4, 256, _args(), ())
    old, new = _cupy_like(0x3000, (7, 3)), _cupy_like(0x3800, (7, 3))  # T's memory, then another batch's
    assert launch.rebind(old, new)
    launch()
    want = _expected()
    want[want.index(0x3000)] = 0x3800  # T's data pointer; A and D (same layout) untouched
    assert device[0]["values"] == want
    assert new in launch.keep_alive[1]
    # Refused, changing nothing: another shape, another dtype, memory no argument views.
    assert not launch.rebind(new, _cupy_like(0x4800, (6, 3)))
    assert not launch.rebind(new, _cupy_like(0x4800, (7, 3), np.float64))
    assert not launch.rebind(_cupy_like(0x9000, (7, 3)), _cupy_like(0x4800, (7, 3)))
    launch()
    assert device[1]["values"] == want


def test_rebind_through_the_dispatcher_fallback(device, monkeypatch):
    class _View:  # a Numba device array's surface
        def __init__(self, x):
            self.device_ctypes_pointer = ctypes.c_void_p(x.data.ptr)
            self.shape, self.strides, self.dtype = x.shape, x.strides, x.dtype

    calls = []

    class _Dispatcher:
        def __getitem__(self, config):
            return lambda *args: calls.append(args)

    kernel = _FakeKernel(TYPES)
    kernel.debug = True  # not packed: Numba's dispatcher
    monkeypatch.setattr(_launch, "_warned_fallback", True)
    monkeypatch.setattr(_launch, "arg", lambda x, name: _View(x))
    T_old, T_new = _cupy_like(0x3000, (7, 3)), _cupy_like(0x3800, (7, 3))
    args = [_View(_cupy_like(0x1000, (7, 3))), 1, _View(T_old)]
    launch = _launch.prepared(_Dispatcher(), kernel, 4, 256, args, (T_old,))
    assert launch.rebind(T_old, T_new) and not launch.rebind(T_old, T_new)  # the second: nothing views T_old
    launch()
    assert calls[0][0] is args[0] and calls[0][2].device_ctypes_pointer.value == 0x3800
    assert launch.keep_alive == [T_new]
