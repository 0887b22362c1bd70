"""Z = sigma(A + b), in place on the GEMM output A = Z_prev W^T: the forward step of a layer.

Math: ``A[r, c] <- 1 / (1 + exp(-(A[r, c] + b[c])))`` (the notes' z_i = sigma(a_i), with the bias
w_i0 added here instead of in the GEMM). Reference: ``bp_gpu.steps_numpy.bias_sigmoid_forward``.

Shapes: ``B`` batch rows, ``O`` units of the layer. A (B, O) C-contiguous, b (O,).

Launch geometry (``_launch.tile_2d``): blocks of (TX, TY) threads, threadIdx.x over columns so a
warp reads whole row segments, threadIdx.y over rows; the grid is one wave of the device for this
kernel and grid-strides, so any (B, O) is covered. One launch, one read and one write of A.

Memory-level parallelism: a thread loads ``ROWS`` of its rows into registers before it computes and
stores any of them (then a ragged tail one row at a time). Loading, computing and storing one row
at a time keeps one load in flight per thread: the compiler cannot move the next row's load above
a store to A, which it cannot prove does not alias it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
from numba import cuda

from . import _launch
from ._reduce import sigmoid

ROWS = 4  # rows loaded before the first store


@cuda.jit(cache=True)
def bias_sigmoid_forward_kernel(A, b):
    n_rows, n_cols = A.shape  # (B, O)
    one = A.dtype.type(1)  # a float literal would promote float32 math to float64
    col_step = cuda.gridDim.x * cuda.blockDim.x
    rs = cuda.gridDim.y * cuda.blockDim.y  # row stride of the grid
    for c in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, n_cols, col_step):
        bc = b[c]
        r = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
        while r + (ROWS - 1) * rs < n_rows:
            a0 = A[r, c]
            a1 = A[r + rs, c]
            a2 = A[r + 2 * rs, c]
            a3 = A[r + 3 * rs, c]
            A[r, c] = sigmoid(a0 + bc, one)
            A[r + rs, c] = sigmoid(a1 + bc, one)
            A[r + 2 * rs, c] = sigmoid(a2 + bc, one)
            A[r + 3 * rs, c] = sigmoid(a3 + bc, one)
            r += ROWS * rs
        while r < n_rows:
            A[r, c] = sigmoid(A[r, c] + bc, one)
            r += rs


def prepare_bias_sigmoid_forward(A: Any, b: Any) -> Callable[[], None]:
    """A launch of ``A <- sigma(A + b)`` on these arrays, on CuPy's current stream of now, checked and
    planned once: calling it only enqueues the kernel.  A (B, O), b (O,)."""
    where = "bias_sigmoid_forward"
    _launch.check_2d(A, None, "A", where)
    _launch.check_1d(b, A.shape[1], "b", where)
    args = (_launch.arg(A, "A"), _launch.arg(b, "b"))
    kernel = _launch.compiled(bias_sigmoid_forward_kernel, args)
    grid, block = _launch.tile_2d(*A.shape, _launch.max_blocks(kernel))
    return _launch.prepared(bias_sigmoid_forward_kernel, kernel, grid, block, args, (A, b))


def bias_sigmoid_forward(A: Any, b: Any) -> None:
    """A <- sigma(A + b) on the device, on CuPy's current stream.  A (B, O), b (O,)."""
    prepare_bias_sigmoid_forward(A, b)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    return [("bias_sigmoid_forward_kernel", bias_sigmoid_forward_kernel.py_func, (f[:, ::1], f[::1]))]
