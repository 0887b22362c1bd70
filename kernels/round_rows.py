"""bfloat16 copies of float32 operands that no fused step writes: the batch and the weights.

Math: ``R[r, c] <- bf16(A[r, c])`` (``round_rows``: the batch X staged for the GEMMs, a weight
matrix), ``R[r, c] <- bf16(X[idx[r], c])`` (``take_rows_round``: a batch gathered from the training
data and rounded in the same pass, so the float32 batch is never written), and
``R[dst + i ld + j] <- bf16(params[start + i cols + j])`` for every layer of the weight map
(``round_weights``: r(W) after anything but the optimizer wrote the weights). References:
``bp_gpu.steps_numpy.round_rows``, ``take_rows_round``, ``round_weights``; the rounding is
``kernels._bf16.bf16`` (``bp_gpu.precision.bf16_bits``).

Shapes: ``B`` rows, ``C`` columns, ``n`` rows of the training data, ``P`` parameters. A (B, C) and
X (n, C) float32 C-contiguous; idx (B,) int64; R (B, ld >= C) uint16 C-contiguous (its padding
columns are not written); params (P,) float32, R (flat) uint16 and wmap (L, 5) int64 for the weights.

Launch geometry: ``_launch.tile_2d`` over (B, C) for the rows, ``_launch.tile_1d`` over the weights,
grid-strided, one wave of the device. Element-wise: bit-identical run to run.

Indices: ``take_rows_round`` reads row ``idx[r] mod n`` (a kernel cannot raise; an index outside
``0..n-1`` wraps as ``cupy.take`` wraps it, and never reads outside X).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda

from . import _launch
from ._bf16 import bf16, check_copy, check_weight_copy, copy_index


@cuda.jit(cache=True)
def round_rows_bf16_kernel(A, R):
    n_rows, n_cols = A.shape  # (B, C)
    rs = cuda.gridDim.y * cuda.blockDim.y
    for c in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, n_cols, cuda.gridDim.x * cuda.blockDim.x):
        for r in range(cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y, n_rows, rs):
            R[r, c] = bf16(A[r, c])


@cuda.jit(cache=True)
def take_rows_bf16_kernel(X, idx, R):
    n, n_cols = X.shape  # (n, C)
    n_rows = idx.shape[0]  # B
    rs = cuda.gridDim.y * cuda.blockDim.y
    for c in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, n_cols, cuda.gridDim.x * cuda.blockDim.x):
        for r in range(cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y, n_rows, rs):
            i = idx[r] % n  # Python's modulo: a negative index wraps to the end, as cupy.take
            R[r, c] = bf16(X[i, c])


@cuda.jit(cache=True)
def round_weights_bf16_kernel(params, R, wmap, n_weights):
    for i in range(cuda.grid(1), n_weights, cuda.gridsize(1)):
        R[copy_index(wmap, i)] = bf16(params[i])


def _check_float32(x: Any, name: str, where: str) -> None:
    if x.dtype != np.float32:
        raise TypeError(f"{where}: {name} must be float32 (bfloat16 copies are of float32 values); got {x.dtype}")


def prepare_round_rows(A: Any, R: Any, fmt: int) -> Callable[[], None]:
    """A launch of ``R[:, :C] <- bf16(A)`` on these arrays, on CuPy's current stream of now, checked
    and planned once.  A (B, C) float32; R (B, ld >= C) uint16; fmt BF16."""
    where = "round_rows"
    _launch.check_2d(A, None, "A", where)
    _check_float32(A, "A", where)
    check_copy(R, A.shape, fmt, where)
    args = (_launch.arg(A, "A"), _launch.arg(R, "R"))
    kernel = _launch.compiled(round_rows_bf16_kernel, args)
    grid, block = _launch.tile_2d(*A.shape, _launch.max_blocks(kernel))
    return _launch.prepared(round_rows_bf16_kernel, kernel, grid, block, args, (A, R))


def prepare_take_rows_round(X: Any, idx: Any, R: Any, fmt: int) -> Callable[[], None]:
    """A launch of ``R[:, :C] <- bf16(X[idx])`` (see the module docstring for indices), on CuPy's
    current stream of now.  X (n, C) float32; idx (B,) int64; R (B, ld >= C) uint16; fmt BF16."""
    where = "take_rows_round"
    _launch.check_2d(X, None, "X", where)
    _check_float32(X, "X", where)
    if idx.ndim != 1 or idx.dtype != np.int64 or not idx.flags.c_contiguous:
        raise ValueError(f"{where}: idx must be a contiguous 1-D int64 array; got {idx.dtype}{tuple(idx.shape)}")
    check_copy(R, (idx.shape[0], X.shape[1]), fmt, where)
    args = (_launch.arg(X, "X"), _launch.arg(idx, "idx"), _launch.arg(R, "R"))
    kernel = _launch.compiled(take_rows_bf16_kernel, args)
    grid, block = _launch.tile_2d(idx.shape[0], X.shape[1], _launch.max_blocks(kernel))
    return _launch.prepared(take_rows_bf16_kernel, kernel, grid, block, args, (X, idx, R))


def prepare_round_weights(params: Any, R: Any, wmap: Any, fmt: int) -> Callable[[], None]:
    """A launch of the bfloat16 copy of every weight matrix by the map ``wmap`` (L, 5) int64
    (``bp_gpu.steps_numpy.round_weights``), on CuPy's current stream of now.  params (P,) float32."""
    where = "round_weights"
    _check_float32(params, "params", where)
    rows = np.asarray(wmap.get() if hasattr(wmap, "get") else wmap)
    n_weights = int(rows[-1, 0] + rows[-1, 1] * rows[-1, 2])
    check_weight_copy(R, wmap, n_weights, fmt, where)
    args = (_launch.arg(params, "params"), _launch.arg(R, "R"), _launch.arg(wmap, "wmap"), n_weights)
    kernel = _launch.compiled(round_weights_bf16_kernel, args)
    grid, block = _launch.tile_1d(n_weights, _launch.max_blocks(kernel))
    return _launch.prepared(round_weights_bf16_kernel, kernel, grid, block, args, (params, R, wmap))


def round_rows(A: Any, R: Any, fmt: int) -> None:
    """R[:, :C] <- bf16(A), on CuPy's current stream."""
    prepare_round_rows(A, R, fmt)()


def take_rows_round(X: Any, idx: Any, R: Any, fmt: int) -> None:
    """R[:, :C] <- bf16(X[idx]), on CuPy's current stream."""
    prepare_take_rows_round(X, idx, R, fmt)()


def round_weights(params: Any, R: Any, wmap: Any, fmt: int) -> None:
    """The bfloat16 copy of every weight matrix, on CuPy's current stream."""
    prepare_round_weights(params, R, wmap, fmt)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks:
    bfloat16 copies are of float32 values, so none for float64."""
    if np.dtype(dtype) != np.float32:
        return []
    f2, f1, u2 = numba.float32[:, ::1], numba.float32[::1], numba.uint16[:, ::1]
    return [
        ("round_rows_bf16_kernel", round_rows_bf16_kernel.py_func, (f2, u2)),
        ("take_rows_bf16_kernel", take_rows_bf16_kernel.py_func, (f2, numba.int64[::1], u2)),
        ("round_weights_bf16_kernel", round_weights_bf16_kernel.py_func,
         (f1, numba.uint16[::1], numba.int64[:, ::1], numba.int64)),
    ]
