"""Z = sigma(A + b), in place on the GEMM output A = Z_prev W^T: the forward step of a layer.

Math: ``A[r, c] <- 1 / (1 + exp(-(A[r, c] + b[c])))`` (the notes' z_i = sigma(a_i), with the bias
w_i0 added here instead of in the GEMM). Reference: ``bp_gpu.steps_numpy.bias_sigmoid_forward``.

Shapes: ``B`` batch rows, ``O`` units of the layer. A (B, O) C-contiguous, b (O,).

Launch geometry (``_launch.tile_2d``): blocks of (TX, TY) threads, threadIdx.x over columns so a
warp reads whole row segments, threadIdx.y over rows; the grid is one wave of the device for this
kernel and grid-strides, so any (B, O) is covered. One launch, one read and one write of A.

Mixed precision: ``bias_sigmoid_forward_bf16_kernel`` also writes R[r, c] <- bf16(Z[r, c]) (R (B, ld)
uint16, rows padded), the next GEMM's operand, after the float32 stores of the same rows. Both
kernels are one body (``_rows``) with the copy a constant of each, so the plain kernel's code is as
it was.

Memory-level parallelism: a thread loads ``ROWS`` of its rows into registers before it computes and
stores any of them (then a ragged tail one row at a time). Loading, computing and storing one row
at a time keeps one load in flight per thread: the compiler cannot move the next row's load above
a store to A, which it cannot prove does not alias it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda

from . import _launch
from ._bf16 import bf16, check_copy
from ._reduce import sigmoid

ROWS = 4  # rows loaded before the first store


@cuda.jit(device=True, inline="always")
def _rows(A, b, R, copy):
    """The kernel body; ``copy`` (a constant of each kernel): also R[r, c] <- bf16(z)."""
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
            z0 = sigmoid(a0 + bc, one)
            A[r, c] = z0
            z1 = sigmoid(a1 + bc, one)
            A[r + rs, c] = z1
            z2 = sigmoid(a2 + bc, one)
            A[r + 2 * rs, c] = z2
            z3 = sigmoid(a3 + bc, one)
            A[r + 3 * rs, c] = z3
            if copy:
                R[r, c] = bf16(z0)
                R[r + rs, c] = bf16(z1)
                R[r + 2 * rs, c] = bf16(z2)
                R[r + 3 * rs, c] = bf16(z3)
            r += ROWS * rs
        while r < n_rows:
            z = sigmoid(A[r, c] + bc, one)
            A[r, c] = z
            if copy:
                R[r, c] = bf16(z)
            r += rs


@cuda.jit(cache=True)
def bias_sigmoid_forward_kernel(A, b):
    _rows(A, b, A, False)


@cuda.jit(cache=True)
def bias_sigmoid_forward_bf16_kernel(A, b, R):
    _rows(A, b, R, True)


def prepare_bias_sigmoid_forward(A: Any, b: Any) -> Callable[[], None]:
    """A launch of ``A <- sigma(A + b)`` on these arrays, on CuPy's current stream of now, checked and
    planned once: calling it only enqueues the kernel.  A (B, O), b (O,)."""
    return _prepare(bias_sigmoid_forward_kernel, "bias_sigmoid_forward", A, b, ())


def prepare_bias_sigmoid_forward_round(A: Any, b: Any, R: Any, fmt: int) -> Callable[[], None]:
    """``prepare_bias_sigmoid_forward`` whose kernel also writes R[:, :O] <- bf16(Z), the next GEMM's
    operand.  A (B, O) float32, b (O,), R (B, ld >= O) uint16; fmt BF16."""
    check_copy(R, A.shape, fmt, "bias_sigmoid_forward_round")
    return _prepare(bias_sigmoid_forward_bf16_kernel, "bias_sigmoid_forward_round", A, b, (R,))


def _prepare(kernel_fn: Any, where: str, A: Any, b: Any, copy: tuple) -> Callable[[], None]:
    _launch.check_2d(A, None, "A", where)
    _launch.check_1d(b, A.shape[1], "b", where)
    args = (_launch.arg(A, "A"), _launch.arg(b, "b"), *(_launch.arg(R, "R") for R in copy))
    kernel = _launch.compiled(kernel_fn, args)
    grid, block = _launch.tile_2d(*A.shape, _launch.max_blocks(kernel))
    return _launch.prepared(kernel_fn, kernel, grid, block, args, (A, b, *copy))


def bias_sigmoid_forward(A: Any, b: Any) -> None:
    """A <- sigma(A + b) on the device, on CuPy's current stream.  A (B, O), b (O,)."""
    prepare_bias_sigmoid_forward(A, b)()


def bias_sigmoid_forward_round(A: Any, b: Any, R: Any, fmt: int) -> None:
    """A <- sigma(A + b) and R[:, :O] <- bf16(A), on CuPy's current stream."""
    prepare_bias_sigmoid_forward_round(A, b, R, fmt)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    rows = [("bias_sigmoid_forward_kernel", bias_sigmoid_forward_kernel.py_func, (f[:, ::1], f[::1]))]
    if dtype == np.float32:
        rows.append(("bias_sigmoid_forward_bf16_kernel", bias_sigmoid_forward_bf16_kernel.py_func,
                     (f[:, ::1], f[::1], numba.uint16[:, ::1])))
    return rows
