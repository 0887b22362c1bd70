"""Host-side launch helpers shared by the kernel modules: geometry, stream, arguments, prepared launches.

Not a kernel. Each launcher in this package goes through these helpers so that every kernel is
launched the same way on the device and in Numba's simulator:

- prepared launches: ``prepared`` returns a callable that only enqueues the kernel. Argument
  checks, geometry, workspaces and the argument buffer are done once, when it is built. On a
  device the buffer is packed with Numba's own ``_Kernel._prepare_args`` (as ``_Kernel.launch``
  does) and the callable is one ``cuLaunchKernel`` call: no typing, no per-argument Python work.
  It is bound to the device current when it was prepared and refuses to launch under another
  (the kernel handle is a context-independent ``CUkernel``, which the driver launches in whatever
  context is current, while its arrays, stream and workspaces belong to one device). A grid of no
  blocks launches nothing; a zero-size array is passed as a null pointer (no kernel indexes into
  an empty dimension; a reduction over no rows still writes its zeros). The eager launchers of the
  kernel modules build one and call it.
- geometry: a block is a ``(TX, TY)`` tile of ``THREADS`` threads, ``TX`` columns wide (a power of
  two up to ``MAX_TX``, narrower for narrow arrays such as the output layer) and ``TY`` rows tall;
  the grid is capped at one wave of the device for that kernel (``max_blocks``: its registers and
  shared memory against the SM's limits, ``_occupancy``) and every kernel grid-strides, so any
  shape is covered. The geometry depends only on the array shape, the kernel and the device, so
  reductions that follow it are in a fixed order: bit-identical run to run.
- stream: CuPy's current stream when the launch is prepared, so kernels and cuBLAS GEMMs issued by
  CuPy run in program order.
- arguments: CuPy arrays become cached Numba device-array views built with ``sync=False``.
  Passing a CuPy array straight to a Numba kernel would rebuild that view on every launch and
  make Numba synchronize with the stream CuPy exports in ``__cuda_array_interface__``.
- workspace: the per-block partial sums of the one-launch reductions and their ticket, allocated
  once per (device, stream), zeroed, then reused (see ``_reduce.last_block``).

In the simulator (``NUMBA_ENABLE_CUDASIM=1``) arrays are NumPy arrays passed as they are, the
stream is 0, a prepared launch calls the simulated kernel, and blocks and grids are tiny because
every simulated thread costs ~0.65 ms.
"""

from __future__ import annotations

import ctypes
import os
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba import cuda

from . import _occupancy

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

# Size of the shared-memory scratch every reducing kernel declares (float64 per thread);
# THREADS never exceeds it.
MAX_THREADS = 256
DEVICE_THREADS = 256
THREADS = 32 if SIMULATOR else DEVICE_THREADS
MAX_TX = 8 if SIMULATOR else 32
_SIM_MAX_BLOCKS = 4

# numba-cuda minor versions (0.x) whose launch internals were compared, tag by tag, with what the
# packed launch mirrors (NVIDIA/numba-cuda, `git show v0.X.Y:numba_cuda/numba/cuda/dispatcher.py`,
# `.../cudadrv/devicearray.py`, `.../cudadrv/driver.py`, `.../args.py`, v0.20.0 to v0.30.4):
# - `_Kernel._prepare_args` and `_Kernel.bind` are the same source from v0.25.0 to v0.30.4, and
#   numba/cuda/args.py (the argument hints `_prepare_args` unwraps) is the same file;
# - `_to_strided_memory_view` gives a Numba device array's `_strided_memory_view_shim` throughout
#   (v0.25's shim lacks `is_contiguous_any`, which `_prepare_args` does not read);
# - `_Kernel.launch` hands those values to cuda.core's `launch` from v0.23.0 on (v0.30.2 only changed
#   the LaunchConfig keyword for cuda.core 1.0); `CudaPythonFunction.handle` is the cuda.core
#   kernel's handle, a CUkernel, throughout.
# v0.24 and earlier `_prepare_args` read `device_ctypes_pointer` and (before v0.23) pass ctypes
# values to another launch call: not packed. Later minors are not read yet: Numba's dispatcher.
_PACKED_LAUNCH_MINORS = range(25, 31)

_devices: dict[int, tuple[int, tuple[int, int]]] = {}
_caps: dict[tuple, int] = {}
_streams: dict[int, Any] = {}
_views: dict[tuple, Any] = {}
_VIEW_CACHE_SIZE = 1024
_workspaces: dict[tuple, Any] = {}
_cupy: Any = None
_fallbacks: dict[str, str] = {}  # cause -> its first message: why launches went to Numba's dispatcher


def packed_launch_checked(version: str) -> bool:
    """Whether numba-cuda ``version`` ("0.30.4", "0.31.0rc1") is one whose launch internals the
    packed launch was compared with (``_PACKED_LAUNCH_MINORS``); others use Numba's dispatcher."""
    m = re.match(r"(\d+)\.(\d+)\.", version)
    return m is not None and int(m.group(1)) == 0 and int(m.group(2)) in _PACKED_LAUNCH_MINORS


def fallback_causes() -> dict[str, str]:
    """Why launches prepared in this process went through Numba's dispatcher, by cause (the first
    message of each); empty when every launch was packed."""
    return dict(_fallbacks)


def _cp() -> Any:
    global _cupy
    if _cupy is None:
        import cupy

        _cupy = cupy
    return _cupy


def _device_reader() -> Callable[[], int]:
    """``cudaGetDevice`` as a callable: CuPy's runtime binding (a thread-local read)."""
    return _cp().cuda.runtime.getDevice


def _device_id() -> int:
    """The calling thread's current CUDA device: the one CuPy allocates on and launches on.

    Read from the CUDA runtime (``cudaGetDevice``, a thread-local read, what CuPy's own
    ``get_current_stream`` calls) rather than cached: Numba's ``get_current_device()`` costs
    ~3.6 us (it resolves the driver's current context on every call), while a cache of it per
    thread would go stale under ``with cupy.cuda.Device(1):``, which switches the device that both
    CuPy and Numba (``numba/cuda/cudadrv/devices.py``, ``_get_or_create_context_uncached``: the
    driver's current context) then use. Prepared launches read it when prepared, and check it at
    each call.
    """
    return 0 if SIMULATOR else _device_reader()()


def _device_info() -> tuple[int, tuple[int, int]]:
    """(SM count, compute capability) of the current device, cached per device id."""
    dev = _device_id()
    info = _devices.get(dev)
    if info is None:
        d = cuda.get_current_device()
        info = _devices[dev] = (d.MULTIPROCESSOR_COUNT, tuple(d.compute_capability))
    return info


def max_blocks(kernel: Any = None, threads: int = THREADS) -> int:
    """Most blocks a launch of ``kernel`` (a compiled Numba ``_Kernel``) uses: one wave, the blocks
    of ``threads`` threads resident at once on the whole device; 4 in the simulator.

    Without a kernel: the thread limit alone (2048 / 256 = 8 blocks per SM on cc 8.0 / 9.0), an
    upper bound of every kernel's cap.
    """
    if SIMULATOR:
        return _SIM_MAX_BLOCKS
    sms, cc = _device_info()
    key = (kernel, threads, cc, sms)  # the kernel itself, not its id: the cache keeps it alive
    cap = _caps.get(key)
    if cap is None:
        if kernel is None:
            target = _occupancy.TARGETS.get(cc)
            per_sm = (target.max_threads if target else 2048) // threads
        elif cc in _occupancy.TARGETS:
            per_sm = _occupancy.blocks_per_sm(cc, kernel.regs_per_thread, threads, kernel.shared_mem_per_block)
        else:  # a target outside the table: the driver's occupancy calculator
            from numba.cuda.cudadrv.devices import get_context

            per_sm = get_context().get_active_blocks_per_multiprocessor(
                kernel._codelibrary.get_cufunc(), threads, 0
            )
        cap = _caps[key] = max(1, int(per_sm)) * sms
    return cap


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def tile_2d(n_rows: int, n_cols: int, cap: int | None = None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block) for a kernel over a (n_rows, n_cols) array: blockDim.x walks columns
    (coalesced), blockDim.y rows; at most ``cap`` blocks (default ``max_blocks()``), both grid
    axes grid-strided. No columns: no blocks (nothing to write, not even a column sum); no rows:
    one row of blocks (the column sums of no rows are zeros, which the kernel writes)."""
    tx = min(MAX_TX, _next_pow2(n_cols))
    ty = THREADS // tx
    cap = max_blocks() if cap is None else cap
    gx = min(-(-n_cols // tx), cap)
    gy = max(1, min(-(-n_rows // ty), cap // max(gx, 1)))
    return (gx, gy), (tx, ty)


def tile_1d(n: int, cap: int | None = None) -> tuple[int, int]:
    """(grid, block) for a grid-stride loop over n elements, at most ``cap`` blocks."""
    cap = max_blocks() if cap is None else cap
    return max(1, min(-(-n // THREADS), cap)), THREADS


def _stream_ptr() -> int:
    return 0 if SIMULATOR else int(_cp().cuda.get_current_stream().ptr)


def stream() -> Any:
    """CuPy's current stream as a Numba stream (cached per pointer); 0 in the simulator."""
    ptr = _stream_ptr()
    if ptr == 0:  # CuPy's null stream is the legacy default stream, which is Numba's stream 0
        return 0
    s = _streams.get(ptr)
    if s is None:
        s = _streams[ptr] = cuda.external_stream(ptr)
    return s


def arg(x: Any, name: str) -> Any:
    """A kernel argument for array ``x``: x itself in the simulator, else a cached Numba view.

    The cache key is (pointer, shape, strides, dtype), so a view is only reused for an array that
    describes exactly the same memory; views hold no reference to the memory (``owner=None``), so
    the cache never keeps a freed buffer alive (a prepared launch keeps its arrays instead).
    """
    if SIMULATOR:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array in the CUDA simulator; got {type(x).__name__}")
        return x
    data = getattr(x, "data", None)
    ptr = getattr(data, "ptr", None)
    if ptr is None:
        raise TypeError(
            f"{name} must be a CuPy array on the device; got {type(x).__name__} "
            "(the launchers never copy host arrays implicitly)"
        )
    key = (ptr, x.shape, x.strides, x.dtype.char)
    view = _views.get(key)
    if view is None:
        if len(_views) >= _VIEW_CACHE_SIZE:
            _views.pop(next(iter(_views)))
        view = _views[key] = cuda.from_cuda_array_interface(
            x.__cuda_array_interface__, owner=None, sync=False
        )
    return view


def workspace(kind: str, dtype: np.dtype, n: int) -> Any:
    """A reusable, zero-initialized device buffer of at least n elements of dtype, named ``kind``;
    one per (device, stream, kind, dtype), allocated at first use at the size of the largest
    request any geometry can make. A larger request replaces it in the cache; launches prepared
    with the old buffer keep it alive and keep using it."""
    dtype = np.dtype(dtype)
    key = (_device_id(), _stream_ptr(), kind, dtype.char)
    buf = _workspaces.get(key)
    if buf is None or buf.shape[0] < n:
        size = max(n, max_blocks() * MAX_TX)
        buf = np.zeros(size, dtype=dtype) if SIMULATOR else _cp().zeros(size, dtype=dtype)
        _workspaces[key] = buf
    return buf


def release_stream(ptr: int) -> None:
    """Forget what is cached for the stream with pointer ``ptr`` (its Numba stream and its
    workspaces, on whichever device: a stream's pointer is unique in the process): for a stream
    being destroyed, whose pointer CUDA may give to a new stream. Launches prepared on it keep
    their own workspaces alive as long as they live."""
    for key in [k for k in _workspaces if k[1] == ptr]:
        del _workspaces[key]
    _streams.pop(ptr, None)


def reduction_workspace(n_partials: int) -> Any:
    """The float64 workspace of the one-launch reductions: ``[ticket | n_partials partial sums]``.
    The ticket (element 0) is 0 between launches: each launch's last block resets it."""
    return workspace("reduction", np.float64, 1 + n_partials)


def check_2d(x: Any, shape: tuple[int, int] | None, name: str, where: str) -> None:
    """Raise ValueError unless x is a C-contiguous 2-D array (of the given shape)."""
    if x.ndim != 2 or (shape is not None and tuple(x.shape) != tuple(shape)):
        want = f"shape {tuple(shape)}" if shape is not None else "2 dimensions"
        raise ValueError(f"{where}: {name} must have {want}; got shape {tuple(x.shape)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{where}: {name} must be C-contiguous")


def check_1d(x: Any, n: int, name: str, where: str) -> None:
    """Raise ValueError unless x is a contiguous 1-D array of n elements."""
    if x.ndim != 1 or x.shape[0] != n:
        raise ValueError(f"{where}: {name} must have shape ({n},); got shape {tuple(x.shape)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{where}: {name} must be contiguous")


# --------------------------------------------------------------------------------------------
# Prepared launches


def compiled(dispatcher: Any, args: Sequence[Any]) -> Any:
    """The Numba ``_Kernel`` that ``dispatcher`` runs for ``args`` (compiled now, or loaded from
    the on-disk cache); None in the simulator. Typed as the dispatcher types a launch's
    arguments (``CUDADispatcher._compile_for_args``: ``typeof_pyval`` of each, then ``compile``)."""
    if SIMULATOR:
        return None
    return dispatcher.compile(tuple(dispatcher.typeof_pyval(a) for a in args))


def _dim3(d: int | tuple) -> tuple[int, int, int]:
    d = (d,) if isinstance(d, int) else tuple(d)
    return (tuple(int(x) for x in d) + (1, 1))[:3]


class UnpackableLaunch(Exception):
    """A launch the packed path does not take, and why (``cause``: "numba-cuda version", "kernel
    mode" or "argument"): it goes through Numba's dispatcher instead. Anything else raised while
    packing is an error, never a reason to fall back."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def pack_arguments(kernel: Any, args: Sequence[Any], stream: Any = 0) -> tuple[int, tuple, list]:
    """(address, keep-alive, array pointers) of the ``void*[]`` kernel-parameter array that
    ``cuLaunchKernel`` takes for ``args``: one pointer per parameter of the compiled kernel, each to
    a copy of its value. The parameter values are Numba's own: ``kernel._prepare_args`` on each
    argument, as ``_Kernel.launch`` runs it (numba_cuda/numba/cuda/dispatcher.py, ``_Kernel.launch``
    and ``_Kernel._prepare_args``: an array becomes meminfo, parent, size, itemsize, data pointer,
    shape..., strides...; scalars become ctypes values). Python ints are pointer-sized, as
    cuda.core's ``ParamHolder`` (cuda_core/cuda/core/_kernel_arg_handler.pyx) passes them. A
    zero-size array's data pointer is Numba's null pointer, which reads back as None
    (``ctypes.c_void_p(0).value``; ``DeviceNDArrayBase.__init__`` makes it for an empty array): 0.

    Array pointers: per array argument, ``[data-pointer slot, (shape, strides, itemsize)]``: the
    ctypes value a launch reads the array's address from, which ``rebind`` may overwrite.

    Raises UnpackableLaunch for an argument that Numba would copy to the device (a host array) or
    a parameter value of another kind: a prepared launch never copies.
    """
    retr: list = []
    values: list = []
    arrays = []  # (index of the first value, ndim) per array argument
    for ty, val in zip(kernel.argument_types, args, strict=True):
        start = len(values)
        kernel._prepare_args(ty, val, stream, retr, values)
        ndim = getattr(ty, "ndim", None)
        if ndim is not None and len(values) - start == 5 + 2 * ndim:  # meminfo, parent, size, itemsize, data, ...
            if values[start + 4] is None and values[start + 2] == 0:
                values[start + 4] = 0
            arrays.append((start, ndim))
    if retr:
        raise UnpackableLaunch("argument", "an argument is not device memory: Numba would copy it on every launch")
    slots = []
    for v in values:
        if isinstance(v, int):  # bool included: the driver copies the parameter's own size
            slots.append(ctypes.c_ssize_t(v))
        elif isinstance(v, ctypes._SimpleCData):
            slots.append(v)
        else:
            raise UnpackableLaunch("argument", f"unexpected kernel parameter value {v!r} ({type(v).__name__})")
    params = (ctypes.c_void_p * max(1, len(slots)))(*[ctypes.addressof(s) for s in slots])
    pointers = [[slots[i + 4], (tuple(values[i + 5 : i + 5 + n]), tuple(values[i + 5 + n : i + 5 + 2 * n]),
                                values[i + 3])] for i, n in arrays]
    return ctypes.addressof(params), (params, slots), pointers


def _layout(x: Any) -> tuple[tuple, tuple, int]:
    """(shape, strides in bytes, itemsize) of a CuPy or Numba device array."""
    return tuple(x.shape), tuple(x.strides), x.dtype.itemsize


def _rebinding(new: Any, old: Any) -> bool:
    """Whether ``new`` can take the place of ``old`` in a prepared launch: the same layout and dtype,
    so every check made when the launch was prepared holds for it too."""
    return new.dtype == old.dtype and _layout(new) == _layout(old)


def _replace(owners: list, old: Any, new: Any) -> None:
    """Keep ``new`` alive in ``old``'s place (or beside the others, where ``old`` was not kept)."""
    if any(o is old for o in owners):
        owners[:] = [new if o is old else o for o in owners]
    else:
        owners.append(new)


def _kernel_name(dispatcher: Any, kernel: Any) -> str:
    """The kernel's name for messages: its Python function's, from the dispatcher (a kernel rebuilt
    from Numba's disk cache has no ``py_func``: ``CUDACacheImpl.rebuild`` -> ``_Kernel._rebuild``,
    numba_cuda/numba/cuda/dispatcher.py, v0.20.0 to v0.30.4), else its compiled entry's."""
    return getattr(getattr(dispatcher, "py_func", None), "__name__", None) or kernel.entry_name


def _wrong_device(name: str, device: int, now: int) -> RuntimeError:
    """The error of a prepared launch called with another device current: its arrays, stream and
    workspaces are on the device it was prepared on, and the driver would launch its kernel on the
    current one."""
    return RuntimeError(
        f"{name}: this launch was prepared on CUDA device {device} but device {now} is current; its "
        f"arrays, stream and workspaces are on device {device}: call it under cupy.cuda.Device({device})"
    )


def _packed_launch(
    name: str, kernel: Any, grid: tuple[int, int, int], block: tuple[int, int, int], stream: Any,
    args: Sequence[Any], owners: tuple,
) -> Callable[[], None]:
    """A callable making one ``cuLaunchKernel`` call with a buffer packed here, on the device current
    now; raises UnpackableLaunch when this numba-cuda's launch path is not the one this was
    written against or the kernel or an argument needs more than a launch."""
    import numba_cuda
    from cuda.bindings import driver as cu

    if not packed_launch_checked(numba_cuda.__version__):
        raise UnpackableLaunch("numba-cuda version",
                               f"numba-cuda {numba_cuda.__version__} is not a version whose launch path was checked")
    # What _Kernel.launch does besides packing and launching: the debug exception check and
    # cooperative launches (neither used here); launch-config-sensitive kernels are dispatched
    # per configuration (CUDADispatcher.call; the attribute exists from v0.30.0, and a kernel
    # rebuilt from the cache by an older version has none).
    if kernel.debug or kernel.cooperative or getattr(kernel, "launch_config_sensitive", False):
        raise UnpackableLaunch("kernel mode", "kernel compiled in debug, cooperative or launch-config-sensitive mode")
    kernel.bind()  # load the module into the current context and run its setup, as a first launch does
    func = cu.CUfunction(int(kernel._codelibrary.get_cufunc().handle))
    address, keep, pointers = pack_arguments(kernel, args, stream)
    hstream = cu.CUstream(_stream_ptr())
    launch_kernel, ok = cu.cuLaunchKernel, cu.CUresult.CUDA_SUCCESS
    (gx, gy, gz), (bx, by, bz) = grid, block
    current_device = _device_reader()
    device = current_device()

    def launch() -> None:
        now = current_device()
        if now != device:
            raise _wrong_device(name, device, now)
        (err,) = launch_kernel(func, gx, gy, gz, bx, by, bz, 0, hstream, address, 0)
        if err != ok:
            raise RuntimeError(f"{name}: cuLaunchKernel failed: {err!r}")

    held = list(owners)
    launch.keep_alive = (keep, held)  # the parameter buffer and the arrays it points into

    def rebind(old: Any, new: Any) -> bool:
        if not _rebinding(new, old):
            return False
        ptr, layout = old.data.ptr, _layout(old)
        hits = [p for p in pointers if p[0].value == ptr and p[1] == layout]
        for p in hits:
            p[0].value = new.data.ptr  # the driver copies the parameters at each cuLaunchKernel
        if hits:
            _replace(held, old, new)
        return bool(hits)

    launch.rebind = rebind
    launch.path = "packed"
    return launch


def _dispatcher_launch(name: str, dispatcher: Any, grid: tuple, block: tuple, stream: Any, args: Sequence[Any],
                       owners: tuple) -> Callable:
    """Numba's ordinary launch with these arguments: ``dispatcher[grid, block, stream](*args)``,
    with the configuration built once, on the device current now. numba-cuda warns on every grid
    under 128 blocks (``_LaunchConfiguration.__init__``, numba_cuda/numba/cuda/dispatcher.py, gated
    by ``config.CUDA_LOW_OCCUPANCY_WARNINGS``); our grids are one wave by design, so the warning is
    silenced here, for our configurations only, not through the global setting.
    ``numba.cuda.core.errors`` exists from numba-cuda v0.21.0 (pyproject's floor)."""
    from numba.cuda.core.errors import NumbaPerformanceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        configured = dispatcher[grid, block, stream]
    args, held = list(args), list(owners)
    current_device = _device_reader()
    device = current_device()

    def launch() -> None:
        now = current_device()
        if now != device:
            raise _wrong_device(name, device, now)
        configured(*args)

    def rebind(old: Any, new: Any) -> bool:
        if not _rebinding(new, old):
            return False
        ptr, layout = old.data.ptr, _layout(old)
        hits = [i for i, a in enumerate(args) if hasattr(a, "device_ctypes_pointer")
                and a.device_ctypes_pointer.value == ptr and _layout(a) == layout]
        for i in hits:
            args[i] = arg(new, "rebound argument")
        if hits:
            _replace(held, old, new)
        return bool(hits)

    launch.keep_alive = held  # Numba's views of CuPy arrays do not keep the memory alive

    launch.rebind = rebind
    launch.path = "dispatcher"
    return launch


def _empty_launch() -> Callable[[], None]:
    """A launch of a grid with no blocks: nothing to enqueue (the driver refuses a zero grid
    dimension), for any arrays of the prepared layout."""

    def launch() -> None:
        pass

    launch.rebind = lambda old, new: _rebinding(new, old)
    launch.path = "empty"
    return launch


def prepared(
    dispatcher: Any, kernel: Any, grid: int | tuple, block: int | tuple, args: Sequence[Any], owners: tuple
) -> Callable[[], None]:
    """A callable that launches ``dispatcher`` (``kernel``, from ``compiled``) on ``args`` with this
    geometry on CuPy's current stream of now; it does nothing else. ``owners``: the arrays whose
    memory ``args`` views; the callable keeps them alive.

    On a device: one ``cuLaunchKernel`` with the parameter buffer packed here
    (``pack_arguments``), refused with RuntimeError when another device than the one current now
    is current at the call; if this numba-cuda's internals are not the ones this was checked
    against (``UnpackableLaunch``), Numba's dispatcher with a configuration built once (one
    warning per cause and process; ``fallback_causes``). In the simulator: the simulated kernel,
    configured at each call (a simulated kernel keeps one configuration, shared by every launch
    of it). A grid with no blocks: nothing, anywhere. ``launch.path`` says which: "packed",
    "dispatcher", "simulator" or "empty".

    ``launch.rebind(old, new) -> bool``: every argument that views exactly ``old``'s memory (address,
    shape, strides) views ``new``'s from the next call on, with no preparation (on a device: one
    pointer written into the parameter buffer). ``new`` must have ``old``'s shape, strides and dtype;
    False, changing nothing, when it does not or when no argument views ``old``. How a step takes a
    new batch array (``bp_gpu.cuda_host``).
    """
    grid3, block3 = _dim3(grid), _dim3(block)
    if 0 in grid3:
        return _empty_launch()
    if SIMULATOR:
        args = list(args)

        def launch() -> None:
            dispatcher[grid, block](*args)

        def rebind(old: Any, new: Any) -> bool:
            hits = [i for i, a in enumerate(args) if a is old] if _rebinding(new, old) else []
            for i in hits:
                args[i] = new
            return bool(hits)

        launch.rebind = rebind
        launch.path = "simulator"
        return launch
    numba_stream, name = stream(), _kernel_name(dispatcher, kernel)
    try:
        return _packed_launch(name, kernel, grid3, block3, numba_stream, args, owners)
    except UnpackableLaunch as exc:
        if exc.cause not in _fallbacks:
            _fallbacks[exc.cause] = str(exc)
            warnings.warn(
                f"bp_gpu.kernels: pre-packed kernel launches are unavailable ({exc}); launching through "
                "Numba's dispatcher (correct, ~3.5 us more host time per array argument)",
                RuntimeWarning,
                stacklevel=3,
            )
        return _dispatcher_launch(name, dispatcher, grid3, block3, numba_stream, args, owners)
