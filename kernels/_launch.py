"""Host-side launch helpers shared by the kernel modules: geometry, stream, argument wrapping.

Not a kernel. Each launcher in this package goes through these helpers so that every kernel is
launched the same way on the device and in Numba's simulator:

- geometry: a block is a ``(TX, TY)`` tile of ``THREADS`` threads, ``TX`` columns wide (a power of
  two up to ``MAX_TX``, narrower for narrow arrays such as the output layer) and ``TY`` rows tall;
  the grid is capped at ``max_blocks()`` and every kernel grid-strides, so any shape is covered.
  The geometry depends only on the array shape and the device, so reductions that follow it are
  in a fixed order: bit-identical run to run.
- stream: CuPy's current stream, as a cached Numba external stream, so kernels and cuBLAS GEMMs
  issued by CuPy run in program order.
- arguments: CuPy arrays become cached Numba device-array views built with ``sync=False``.
  Passing a CuPy array straight to a Numba kernel would rebuild that view on every launch and,
  because CuPy exports its stream in ``__cuda_array_interface__``, synchronize that stream from
  the host on every launch.
- workspace: the partial sums of the two-stage reductions, allocated once per (device, stream,
  dtype) at their largest possible size, then reused.

In the simulator (``NUMBA_ENABLE_CUDASIM=1``) arrays are NumPy arrays passed as they are, the
stream is 0, and blocks and grids are tiny because every simulated thread costs ~0.65 ms.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numba import cuda

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

# Size of the shared-memory scratch every reducing kernel declares (float64 per thread);
# THREADS never exceeds it.
MAX_THREADS = 256
THREADS = 32 if SIMULATOR else 256
MAX_TX = 8 if SIMULATOR else 32
# Blocks per SM: 8 x 256 threads fills an SM of cc 8.0/9.0 (2048 resident threads).
_BLOCKS_PER_SM = 8
_SIM_MAX_BLOCKS = 4

_max_blocks: dict[int, int] = {}
_streams: dict[int, Any] = {}
_views: dict[tuple, Any] = {}
_VIEW_CACHE_SIZE = 1024
_workspaces: dict[tuple, Any] = {}


def _device_id() -> int:
    return 0 if SIMULATOR else cuda.get_current_device().id


def max_blocks() -> int:
    """Most blocks a launch uses: enough to fill the device once; 4 in the simulator."""
    if SIMULATOR:
        return _SIM_MAX_BLOCKS
    dev = _device_id()
    n = _max_blocks.get(dev)
    if n is None:
        n = _max_blocks[dev] = _BLOCKS_PER_SM * cuda.get_current_device().MULTIPROCESSOR_COUNT
    return n


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def tile_2d(n_rows: int, n_cols: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block) for a kernel over a (n_rows, n_cols) array: blockDim.x walks columns
    (coalesced), blockDim.y rows; both grid axes are capped and grid-strided."""
    tx = min(MAX_TX, _next_pow2(n_cols))
    ty = THREADS // tx
    cap = max_blocks()
    gx = min(-(-n_cols // tx), cap)
    gy = max(1, min(-(-n_rows // ty), cap // gx))
    return (gx, gy), (tx, ty)


def tile_1d(n: int) -> tuple[int, int]:
    """(grid, block) for a grid-stride loop over n elements."""
    return max(1, min(-(-n // THREADS), max_blocks())), THREADS


def stream() -> Any:
    """CuPy's current stream as a Numba stream (cached per pointer); 0 in the simulator."""
    if SIMULATOR:
        return 0
    import cupy

    ptr = cupy.cuda.get_current_stream().ptr
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
    the cache never keeps a freed buffer alive.
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
    """A reusable device buffer of at least n elements of dtype, named ``kind``; one per
    (device, stream, kind, dtype), allocated on first use at the size of the largest request any
    geometry can make, so it is never reallocated in a training step."""
    dtype = np.dtype(dtype)
    if SIMULATOR:
        stream_ptr = 0
    else:
        import cupy

        stream_ptr = cupy.cuda.get_current_stream().ptr
    key = (_device_id(), stream_ptr, kind, dtype.char)
    buf = _workspaces.get(key)
    if buf is None or buf.shape[0] < n:
        size = max(n, max_blocks() * MAX_TX)
        buf = np.empty(size, dtype=dtype) if SIMULATOR else cupy.empty(size, dtype=dtype)
        _workspaces[key] = buf
    return buf


def check_2d(x: Any, shape: tuple[int, int] | None, name: str, where: str) -> None:
    """Raise ValueError unless x is a C-contiguous 2-D array (of the given shape)."""
    if x.ndim != 2 or (shape is not None and tuple(x.shape) != tuple(shape)):
        want = f"shape {tuple(shape)}" if shape is not None else "2 dimensions"
        raise ValueError(f"{where}: {name} must have {want}; got shape {tuple(x.shape)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{where}: {name} must be C-contiguous")


def check_1d(x: Any, n: int, name: str, where: str) -> None:
    if x.ndim != 1 or x.shape[0] != n:
        raise ValueError(f"{where}: {name} must have shape ({n},); got shape {tuple(x.shape)}")
