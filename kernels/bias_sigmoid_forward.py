"""Z = sigma(A + b), in place on the GEMM output A = Z_prev W^T: the forward step of a layer.

Math: ``A[r, c] <- 1 / (1 + exp(-(A[r, c] + b[c])))`` (the notes' z_i = sigma(a_i), with the bias
w_i0 added here instead of in the GEMM). Reference: ``bp_gpu.steps_numpy.bias_sigmoid_forward``.

Shapes: ``B`` batch rows, ``O`` units of the layer. A (B, O) C-contiguous, b (O,).

Launch geometry (``_launch.tile_2d``): blocks of (TX, TY) threads, threadIdx.x over columns so a
warp reads whole row segments, threadIdx.y over rows; both grid axes capped at about one wave of
the device and grid-strided, so any (B, O) is covered. One launch, one read and one write of A.
"""

from __future__ import annotations

from typing import Any

import numba
from numba import cuda

from . import _launch
from ._reduce import sigmoid


@cuda.jit
def bias_sigmoid_forward_kernel(A, b):
    n_rows, n_cols = A.shape  # (B, O)
    one = A.dtype.type(1)  # a float literal would promote float32 math to float64
    col_step = cuda.gridDim.x * cuda.blockDim.x
    row_step = cuda.gridDim.y * cuda.blockDim.y
    for c in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, n_cols, col_step):
        bc = b[c]
        for r in range(cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y, n_rows, row_step):
            A[r, c] = sigmoid(A[r, c] + bc, one)


def bias_sigmoid_forward(A: Any, b: Any) -> None:
    """A <- sigma(A + b) on the device, on CuPy's current stream.  A (B, O), b (O,)."""
    where = "bias_sigmoid_forward"
    _launch.check_2d(A, None, "A", where)
    _launch.check_1d(b, A.shape[1], "b", where)
    grid, block = _launch.tile_2d(*A.shape)
    bias_sigmoid_forward_kernel[grid, block, _launch.stream()](_launch.arg(A, "A"), _launch.arg(b, "b"))


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    return [("bias_sigmoid_forward_kernel", bias_sigmoid_forward_kernel.py_func, (f[:, ::1], f[::1]))]
