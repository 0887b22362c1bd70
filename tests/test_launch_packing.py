"""Pre-packed kernel launches (``_launch.pack_arguments``, ``_launch.prepared``), without a GPU.

The kernels are built the way Numba's disk cache builds them (``CUDACacheImpl.rebuild`` ->
``_Kernel._rebuild`` of the states ``_Kernel._reduce_states`` saved), so they have what a kernel
loaded by a second process has, and nothing more (no ``py_func``). The parameter buffer is built
from Numba's own ``_Kernel._prepare_args`` on stand-ins for device arrays, then read back through
the ``void*[]`` that ``cuLaunchKernel`` would receive. The launch itself is a recorded stand-in for
the driver call, and the current device a number the tests set.
"""

import ctypes
import inspect
import warnings
from types import SimpleNamespace

import numba
import numba_cuda
import numpy as np
import pytest
from bp_gpu.kernels import _launch

if not _launch.packed_launch_checked(numba_cuda.__version__):
    # Other versions launch through Numba's dispatcher; the internals used below may not exist.
    pytest.skip(f"numba-cuda {numba_cuda.__version__}: pre-packed launches not checked for it",
                allow_module_level=True)

from cuda.bindings import driver as cu  # noqa: E402
from numba.core.typing import signature  # noqa: E402
from numba.cuda.cudadrv.devicearray import _StridedLayoutShim, _StridedMemoryViewShim  # noqa: E402
from numba.cuda.dispatcher import _Kernel  # noqa: E402

# v0.25's layout shim has no is_contiguous_any (v0.26 added it); _prepare_args reads neither.
_ANY = {"is_contiguous_any": True} if "is_contiguous_any" in _StridedLayoutShim.__slots__ else {}


class _DeviceArray:
    """What Numba's launch path reads of a device array (``_to_strided_memory_view``). ``ptr`` None
    is what Numba gives for a zero-size array (``ctypes.c_void_p(0).value``)."""

    __cuda_memory__ = True

    def __init__(self, ptr, shape, dtype):
        dtype = np.dtype(dtype)
        strides = tuple(int(s) for s in np.empty(shape, dtype).strides)
        self._strided_memory_view_shim = _StridedMemoryViewShim(
            ptr=ptr, shape=tuple(shape), dtype=dtype, size=int(np.prod(shape)),
            _layout=_StridedLayoutShim(strides_in_bytes=strides, is_contiguous_c=True,
                                       is_contiguous_f=len(shape) < 2, **_ANY),
        )


class _Module:
    """The loaded module: ``_Kernel.bind`` runs its setup once (``initialize_once``)."""

    def __init__(self):
        self.initialized, self.setups = False, 0

    def setup(self):
        self.initialized, self.setups = True, self.setups + 1


class _CodeLibrary:
    """What a kernel reaches through ``_codelibrary``: the function loaded in the current context."""

    def __init__(self):
        self.cufunc = SimpleNamespace(handle=0xF00D, module=_Module())

    def get_cufunc(self):
        return self.cufunc


F32 = numba.float32
# The output step's signature: A, b, T, positive_class, scale, D, db, loss, ws.
TYPES = (F32[:, ::1], F32[::1], F32[:, ::1], numba.int64, numba.float64, F32[:, ::1], F32[::1],
         numba.float64[::1], numba.float64[::1])
ENTRY = "_ZN6cudapy7bp_gpu7kernels17output_loss_delta24output_loss_delta_kernelE"  # a mangled entry name


def _rebuilt(argument_types=TYPES, **states):
    """A kernel as Numba's disk cache rebuilds it: ``_Kernel._rebuild`` of the states that
    ``_Kernel._reduce_states`` saves (those of this numba-cuda: v0.30 added launch_config_sensitive)."""
    payload = dict(cooperative=False, name=ENTRY, signature=signature(numba.types.void, *argument_types),
                   codelibrary=_CodeLibrary(), debug=False, lineinfo=False, call_helper=None, extensions=[],
                   shared_memory_carveout=None, launch_config_sensitive=False)
    payload.update(states)
    accepted = inspect.signature(_Kernel._rebuild).parameters
    return _Kernel._rebuild(**{k: v for k, v in payload.items() if k in accepted})


class _Dispatcher:
    """A dispatcher stand-in: its Python function's name, and Numba's launch recorded."""

    def __init__(self, name="output_loss_delta_kernel"):
        self.py_func = SimpleNamespace(__name__=name)
        self.calls = []

    def __getitem__(self, config):
        return lambda *args: self.calls.append((config, args))


def _args():
    return [
        _DeviceArray(0x1000, (7, 3), np.float32), _DeviceArray(0x2000, (3,), np.float32),
        _DeviceArray(0x3000, (7, 3), np.float32), 1, 0.125, _DeviceArray(0x4000, (7, 3), np.float32),
        _DeviceArray(0x5000, (3,), np.float32), _DeviceArray(0x6000, (2,), np.float64),
        _DeviceArray(0x7000, (99,), np.float64),
    ]


def _expected(args=None):
    """The parameter values, by hand: per array meminfo, parent, size, itemsize, data, shape, strides."""
    out = []
    for a in _args() if args is None else args:
        if isinstance(a, _DeviceArray):
            v = a._strided_memory_view_shim
            out += [0, 0, v.size, v.dtype.itemsize, v.ptr or 0, *v.shape, *v._layout.strides_in_bytes]
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


class _Device:
    """The driver and runtime as a launch sees them: cuLaunchKernel recorded (with the first
    ``n_values`` parameter values read at the call), the current device a number."""

    def __init__(self):
        self.launches, self.n_values, self.current = [], 57, 0

    def launch_kernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        self.launches.append(dict(f=int(f), grid=(gx, gy, gz), block=(bx, by, bz), shared=shared,
                                  stream=int(stream), extra=extra,
                                  values=_read_params(params, self.n_values, SCALARS)))
        return (cu.CUresult.CUDA_SUCCESS,)


@pytest.fixture
def device(monkeypatch):
    """CuPy's current stream 0x77, device 0 current, the driver's cuLaunchKernel recorded; no
    fallback seen yet in this process."""
    d = _Device()
    monkeypatch.setattr(_launch, "_stream_ptr", lambda: 0x77)
    monkeypatch.setattr(_launch, "stream", lambda: 0)
    monkeypatch.setattr(_launch, "_device_reader", lambda: lambda: d.current)
    monkeypatch.setattr(cu, "cuLaunchKernel", d.launch_kernel)
    monkeypatch.setattr(_launch, "_fallbacks", {})
    return d


def test_a_kernel_from_numbas_disk_cache_takes_the_packed_path(device):
    kernel = _rebuilt()
    assert not hasattr(kernel, "py_func")  # what every process after the first gets from the cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        launch = _launch.prepared(_Dispatcher(), kernel, (2, 3), (32, 8), _args(), ())
    launch()
    assert launch.path == "packed" and len(device.launches) == 1 and _launch.fallback_causes() == {}
    assert kernel._codelibrary.cufunc.module.setups == 1  # bound: the module's setup ran, once


def test_packed_parameters_equal_numbas_own_preparation():
    kernel = _rebuilt()
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
    copying = _rebuilt((F32[::1],))

    def copy_back(ty, val, stream, retr, values):
        retr.append(lambda: None)  # what Numba does for a host array: copy back after the launch
        values.append(0)

    copying._prepare_args = copy_back
    with pytest.raises(_launch.UnpackableLaunch, match="not device memory") as info:
        _launch.pack_arguments(copying, [np.zeros(3, np.float32)])
    assert info.value.cause == "argument"

    odd = _rebuilt((F32[::1],))
    odd._prepare_args = lambda ty, val, stream, retr, values: values.append(object())
    with pytest.raises(_launch.UnpackableLaunch, match="unexpected kernel parameter value"):
        _launch.pack_arguments(odd, [None])


def test_prepared_launch_is_one_driver_call_with_the_packed_buffer(device):
    kernel = _rebuilt()
    owners = (object(),)
    launch = _launch.prepared(_Dispatcher(), kernel, (2, 3), (32, 8), _args(), owners)
    assert kernel._codelibrary.cufunc.module.setups == 1 and device.launches == []  # preparing launches nothing
    launch()
    launch()
    assert len(device.launches) == 2
    assert device.launches[0] == dict(f=0xF00D, grid=(2, 3, 1), block=(32, 8, 1), shared=0, stream=0x77,
                                      extra=0, values=_expected())
    assert launch.keep_alive[1] == list(owners)


def test_a_failed_launch_raises_naming_the_kernel(device, monkeypatch):
    monkeypatch.setattr(cu, "cuLaunchKernel", lambda *a: (cu.CUresult.CUDA_ERROR_INVALID_CONTEXT,))
    launch = _launch.prepared(_Dispatcher(), _rebuilt(), 4, 256, _args(), ())
    with pytest.raises(RuntimeError, match="output_loss_delta_kernel: cuLaunchKernel failed: .*INVALID_CONTEXT"):
        launch()
    launch = _launch.prepared(None, _rebuilt(), 4, 256, _args(), ())  # no dispatcher: the compiled entry's name
    with pytest.raises(RuntimeError, match=f"{ENTRY}: cuLaunchKernel failed"):
        launch()


def test_unpackable_launches_fall_back_to_the_dispatcher_warned_once_per_cause(device, monkeypatch):
    from numba.cuda.core.errors import NumbaPerformanceWarning

    class _Warning(_Dispatcher):
        def __getitem__(self, config):
            msg = "Grid size 4 will likely result in GPU under-utilization"  # as numba-cuda's
            warnings.warn(msg, NumbaPerformanceWarning, stacklevel=2)
            return super().__getitem__(config)

    dispatcher = _Warning()
    debug = _rebuilt(debug=True)  # _Kernel.launch would check for device exceptions: not ours to replicate
    with pytest.warns(RuntimeWarning, match="pre-packed kernel launches are unavailable .*debug"):
        launch = _launch.prepared(dispatcher, debug, (2, 2), (8, 4), _args(), ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither the same cause's warning again nor low occupancy
        again = _launch.prepared(dispatcher, _rebuilt(debug=True), (2, 2), (8, 4), _args(), ())
    launch()
    again()
    assert device.launches == [] and len(dispatcher.calls) == 2 and launch.path == again.path == "dispatcher"
    assert dispatcher.calls[0][0] == ((2, 2, 1), (8, 4, 1), 0) and len(dispatcher.calls[0][1]) == 9
    # Another cause is warned about on its own, and each is kept.
    monkeypatch.setattr(numba_cuda, "__version__", "0.99.0")
    with pytest.warns(RuntimeWarning, match="numba-cuda 0.99.0 is not a version whose launch path was checked"):
        _launch.prepared(dispatcher, _rebuilt(), 1, 32, _args(), ())()
    assert set(_launch.fallback_causes()) == {"kernel mode", "numba-cuda version"}
    assert device.launches == []


def test_a_programming_error_is_raised_not_taken_for_another_numba_cuda(device):
    kernel = _rebuilt(codelibrary=SimpleNamespace())  # no get_cufunc: a bug, not a version difference
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="get_cufunc"):
            _launch.prepared(_Dispatcher(), kernel, 4, 256, _args(), ())
    assert _launch.fallback_causes() == {}


def test_a_zero_size_array_is_passed_as_a_null_pointer(device):
    # A batch of no rows: A (0, 3) and its bias b (3,). Numba gives None for the data pointer of an
    # empty array; the launch passes 0 and still runs (a reduction over no rows writes its zeros).
    args = [_DeviceArray(None, (0, 3), np.float32), _DeviceArray(0x2000, (3,), np.float32)]
    device.n_values = 16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        launch = _launch.prepared(_Dispatcher(), _rebuilt((F32[:, ::1], F32[::1])), 1, 32, args, ())
    launch()
    assert launch.path == "packed" and _launch.fallback_causes() == {}
    assert device.launches[0]["values"] == _expected(args) and device.launches[0]["values"][4] == 0


def test_a_grid_of_no_blocks_launches_nothing(device):
    launch = _launch.prepared(_Dispatcher(), _rebuilt(), (0, 3), (32, 8), _args(), ())
    launch()
    assert launch.path == "empty" and device.launches == [] and _launch.fallback_causes() == {}
    assert launch.rebind(_cupy_like(0x3000, (7, 3)), _cupy_like(0x3800, (7, 3)))
    assert not launch.rebind(_cupy_like(0x3000, (7, 3)), _cupy_like(0x3800, (6, 3)))


@pytest.mark.parametrize("debug", [False, True], ids=["packed", "dispatcher"])
def test_a_launch_is_bound_to_the_device_it_was_prepared_on(device, debug, monkeypatch):
    monkeypatch.setattr(_launch, "_fallbacks", {"kernel mode": "already warned"})
    dispatcher = _Dispatcher()
    launch = _launch.prepared(dispatcher, _rebuilt(debug=debug), 4, 256, _args(), ())
    device.current = 1  # say, under `with cupy.cuda.Device(1):`
    with pytest.raises(RuntimeError, match="output_loss_delta_kernel: this launch was prepared on CUDA device 0 but "
                                           r"device 1 is current.*cupy.cuda.Device\(0\)"):
        launch()
    assert device.launches == [] and dispatcher.calls == []
    device.current = 0
    launch()
    assert len(device.launches) + len(dispatcher.calls) == 1


def _cupy_like(ptr, shape, dtype=np.float32):
    """What ``rebind`` reads of a CuPy array."""
    a = np.empty(shape, dtype)
    return SimpleNamespace(data=SimpleNamespace(ptr=ptr), shape=a.shape, strides=a.strides, dtype=a.dtype)


def test_rebind_points_the_packed_buffer_at_a_new_array(device):
    launch = _launch.prepared(_Dispatcher(), _rebuilt(), 4, 256, _args(), ())
    old, new = _cupy_like(0x3000, (7, 3)), _cupy_like(0x3800, (7, 3))  # T's memory, then another batch's
    assert launch.rebind(old, new)
    launch()
    want = _expected()
    want[want.index(0x3000)] = 0x3800  # T's data pointer; A and D (same layout) untouched
    assert device.launches[0]["values"] == want
    assert new in launch.keep_alive[1]
    # Refused, changing nothing: another shape, another dtype, memory no argument views.
    assert not launch.rebind(new, _cupy_like(0x4800, (6, 3)))
    assert not launch.rebind(new, _cupy_like(0x4800, (7, 3), np.float64))
    assert not launch.rebind(_cupy_like(0x9000, (7, 3)), _cupy_like(0x4800, (7, 3)))
    launch()
    assert device.launches[1]["values"] == want


def test_rebind_through_the_dispatcher_fallback(device, monkeypatch):
    class _View:  # a Numba device array's surface
        def __init__(self, x):
            self.device_ctypes_pointer = ctypes.c_void_p(x.data.ptr)
            self.shape, self.strides, self.dtype = x.shape, x.strides, x.dtype

    dispatcher = _Dispatcher()
    monkeypatch.setattr(_launch, "_fallbacks", {"kernel mode": "already warned"})
    monkeypatch.setattr(_launch, "arg", lambda x, name: _View(x))
    T_old, T_new = _cupy_like(0x3000, (7, 3)), _cupy_like(0x3800, (7, 3))
    args = [_View(_cupy_like(0x1000, (7, 3))), 1, _View(T_old)]
    launch = _launch.prepared(dispatcher, _rebuilt(debug=True), 4, 256, args, (T_old,))  # debug: not packed
    assert launch.rebind(T_old, T_new) and not launch.rebind(T_old, T_new)  # the second: nothing views T_old
    launch()
    called = dispatcher.calls[0][1]
    assert called[0] is args[0] and called[2].device_ctypes_pointer.value == 0x3800
    assert launch.keep_alive == [T_new]
