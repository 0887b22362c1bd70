"""delta_prev = G * Z * (1 - Z) in place, fused with its column sums (the bias gradient).

Math: ``G[r, c] <- G[r, c] Z[r, c] (1 - Z[r, c])``; ``db[c] <- sum_r G[r, c]`` (the notes'
delta_i^(l-1) = (sum_j delta_j w_ji) sigma'(a_i^(l-1)) with sigma' = z (1 - z), G = delta W from the
GEMM; and dL/dw_i0 = delta_i summed over the batch). Reference:
``bp_gpu.steps_numpy.sigmoid_delta_backward``.

Shapes: ``B`` batch rows, ``O`` units of the layer below. G, Z (B, O) C-contiguous; db (O,).
``NB`` row blocks of the grid (gridDim.y).

Launch geometry (``_launch.tile_2d``): blocks of (TX, TY) threads, threadIdx.x over columns,
threadIdx.y over rows, both grid axes grid-strided. Stage 1 (``sigmoid_delta_backward_kernel``)
writes G and, per block, the column sums of its rows (float64 accumulation, a fixed-order tree over
threadIdx.y in shared memory) into row blockIdx.y of a (NB, O) workspace. Stage 2
(``column_sum_kernel``, one row of blocks) sums the NB partials of each column in a fixed order
into db. When the grid has a single row of blocks, stage 1 writes db directly: one launch.
"""

from __future__ import annotations

from typing import Any

import numba
from numba import cuda

from . import _launch
from ._launch import MAX_THREADS
from ._reduce import block_sum_rows


@cuda.jit
def sigmoid_delta_backward_kernel(G, Z, partial):
    n_rows, n_cols = G.shape  # (B, O)
    one = G.dtype.type(1)
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    tx = cuda.threadIdx.x
    row_step = cuda.gridDim.y * cuda.blockDim.y
    # Column tiles: the loop bounds are the same for every thread of the block, so the
    # syncthreads inside block_sum_rows is reached by all of them.
    for c0 in range(cuda.blockIdx.x * cuda.blockDim.x, n_cols, cuda.gridDim.x * cuda.blockDim.x):
        c = c0 + tx
        acc = 0.0
        if c < n_cols:
            for r in range(cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y, n_rows, row_step):
                z = Z[r, c]
                g = G[r, c] * z * (one - z)
                G[r, c] = g
                acc += g
        total = block_sum_rows(sh, acc)
        if cuda.threadIdx.y == 0 and c < n_cols:
            partial[cuda.blockIdx.y, c] = total  # (NB, O)


@cuda.jit
def column_sum_kernel(partial, out):
    """out[c] <- sum_k partial[k, c], k in a fixed order.  partial (NB, O), out (O,)."""
    n_rows, n_cols = partial.shape
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    tx = cuda.threadIdx.x
    for c0 in range(cuda.blockIdx.x * cuda.blockDim.x, n_cols, cuda.gridDim.x * cuda.blockDim.x):
        c = c0 + tx
        acc = 0.0
        if c < n_cols:
            for k in range(cuda.threadIdx.y, n_rows, cuda.blockDim.y):
                acc += partial[k, c]
        total = block_sum_rows(sh, acc)
        if cuda.threadIdx.y == 0 and c < n_cols:
            out[c] = total


def column_sum(partial: Any, out: Any, stream: Any) -> None:
    """Launch stage 2: out <- column sums of partial (NB, O), one row of blocks."""
    (gx, _), block = _launch.tile_2d(*partial.shape)
    column_sum_kernel[(gx, 1), block, stream](_launch.arg(partial, "partial"), _launch.arg(out, "db"))


def sigmoid_delta_backward(G: Any, Z: Any, db: Any) -> None:
    """G <- G Z (1 - Z); db <- column sums of the new G, on CuPy's current stream.
    G, Z (B, O); db (O,)."""
    where = "sigmoid_delta_backward"
    _launch.check_2d(G, None, "G", where)
    _launch.check_2d(Z, G.shape, "Z", where)
    n_rows, n_cols = G.shape
    _launch.check_1d(db, n_cols, "db", where)
    grid, block = _launch.tile_2d(n_rows, n_cols)
    stream = _launch.stream()
    n_blocks_y = grid[1]
    if n_blocks_y == 1:
        partial = db.reshape(1, n_cols)  # (1, O): stage 1 writes the sums themselves
    else:
        partial = _launch.workspace("column_partials", G.dtype, n_blocks_y * n_cols)
        partial = partial[: n_blocks_y * n_cols].reshape(n_blocks_y, n_cols)  # (NB, O)
    sigmoid_delta_backward_kernel[grid, block, stream](
        _launch.arg(G, "G"), _launch.arg(Z, "Z"), _launch.arg(partial, "partial")
    )
    if n_blocks_y > 1:
        column_sum(partial, db, stream)


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    return [
        ("sigmoid_delta_backward_kernel", sigmoid_delta_backward_kernel.py_func, (f[:, ::1], f[:, ::1], f[:, ::1])),
        ("column_sum_kernel", column_sum_kernel.py_func, (f[:, ::1], f[::1])),
    ]
