"""delta_prev = G * Z * (1 - Z) in place, fused with its column sums (the bias gradient): one launch.

Math: ``G[r, c] <- G[r, c] Z[r, c] (1 - Z[r, c])``; ``db[c] <- sum_r G[r, c]`` (the notes'
delta_i^(l-1) = (sum_j delta_j w_ji) sigma'(a_i^(l-1)) with sigma' = z (1 - z), G = delta W from the
GEMM; and dL/dw_i0 = delta_i summed over the batch). Reference:
``bp_gpu.steps_numpy.sigmoid_delta_backward``.

Shapes: ``B`` batch rows, ``O`` units of the layer below. G, Z (B, O) C-contiguous; db (O,).
``NB`` row blocks of the grid (gridDim.y); ws (1 + NB O,) float64, the reduction workspace.

Launch geometry (``_launch.tile_2d``): blocks of (TX, TY) threads, threadIdx.x over columns,
threadIdx.y over rows, one wave of the device for this kernel, both grid axes grid-strided. Each
block writes G and the column sums of its rows (float64, a fixed-order tree over threadIdx.y in
shared memory) into row blockIdx.y of the (NB, O) partials in ``ws[1:]``; the last block to finish
(``_reduce.last_block``) sums the NB partials of every column in a fixed order into db. One
launch; bit-identical run to run.

Mixed precision: ``sigmoid_delta_backward_bf16_kernel`` also writes R[r, c] <- bf16(new G[r, c])
(R (B, ld) uint16), the copy of the delta the GEMMs read; sigma' uses the float32 Z.

Memory-level parallelism: a thread loads ``ROWS`` rows of G and Z before it computes and stores
any of them (then a ragged tail), so eight loads are in flight, not two (the compiler cannot hoist
a load above a store to G it cannot prove does not alias it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda

from . import _launch
from ._bf16 import bf16, check_copy
from ._launch import MAX_THREADS
from ._reduce import block_sum_rows, last_block, sum_partial_columns

ROWS = 4  # rows loaded before the first store


@cuda.jit(device=True, inline="always")
def _body(G, Z, db, ws, R, copy):
    """The kernel body; ``copy`` (a constant of each kernel): also R[r, c] <- bf16(new G[r, c])."""
    n_rows, n_cols = G.shape  # (B, O)
    one = G.dtype.type(1)
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    tx = cuda.threadIdx.x
    rs = cuda.gridDim.y * cuda.blockDim.y  # row stride of the grid
    # Column tiles: the loop bounds are the same for every thread of the block, so the
    # syncthreads inside block_sum_rows is reached by all of them.
    for c0 in range(cuda.blockIdx.x * cuda.blockDim.x, n_cols, cuda.gridDim.x * cuda.blockDim.x):
        c = c0 + tx
        acc = 0.0
        if c < n_cols:
            r = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
            while r + (ROWS - 1) * rs < n_rows:
                z0 = Z[r, c]
                z1 = Z[r + rs, c]
                z2 = Z[r + 2 * rs, c]
                z3 = Z[r + 3 * rs, c]
                g0 = G[r, c] * z0 * (one - z0)
                g1 = G[r + rs, c] * z1 * (one - z1)
                g2 = G[r + 2 * rs, c] * z2 * (one - z2)
                g3 = G[r + 3 * rs, c] * z3 * (one - z3)
                G[r, c] = g0
                G[r + rs, c] = g1
                G[r + 2 * rs, c] = g2
                G[r + 3 * rs, c] = g3
                if copy:
                    R[r, c] = bf16(g0)
                    R[r + rs, c] = bf16(g1)
                    R[r + 2 * rs, c] = bf16(g2)
                    R[r + 3 * rs, c] = bf16(g3)
                acc += g0
                acc += g1
                acc += g2
                acc += g3
                r += ROWS * rs
            while r < n_rows:
                z = Z[r, c]
                g = G[r, c] * z * (one - z)
                G[r, c] = g
                if copy:
                    R[r, c] = bf16(g)
                acc += g
                r += rs
        total = block_sum_rows(sh, acc)
        if cuda.threadIdx.y == 0 and c < n_cols:
            ws[1 + cuda.blockIdx.y * n_cols + c] = total  # (NB, O) partials
    if last_block(ws, sh):
        sum_partial_columns(ws, 1, cuda.gridDim.y, n_cols, db, sh)


@cuda.jit(cache=True)
def sigmoid_delta_backward_kernel(G, Z, db, ws):
    _body(G, Z, db, ws, G, False)


@cuda.jit(cache=True)
def sigmoid_delta_backward_bf16_kernel(G, Z, db, ws, R):
    _body(G, Z, db, ws, R, True)


def prepare_sigmoid_delta_backward(G: Any, Z: Any, db: Any) -> Callable[[], None]:
    """A launch of ``G <- G Z (1 - Z); db <- column sums of the new G`` on these arrays, on CuPy's
    current stream of now, checked and planned once: calling it only enqueues the kernel.
    G, Z (B, O); db (O,)."""
    return _prepare(sigmoid_delta_backward_kernel, "sigmoid_delta_backward", G, Z, db, ())


def prepare_sigmoid_delta_backward_round(G: Any, Z: Any, db: Any, R: Any, fmt: int) -> Callable[[], None]:
    """``prepare_sigmoid_delta_backward`` whose kernel also writes R[:, :O] <- bf16(new G), the copy
    the GEMMs read.  R (B, ld >= O) uint16; fmt BF16."""
    check_copy(R, G.shape, fmt, "sigmoid_delta_backward_round")
    return _prepare(sigmoid_delta_backward_bf16_kernel, "sigmoid_delta_backward_round", G, Z, db, (R,))


def _prepare(kernel_fn: Any, where: str, G: Any, Z: Any, db: Any, copy: tuple) -> Callable[[], None]:
    _launch.check_2d(G, None, "G", where)
    _launch.check_2d(Z, G.shape, "Z", where)
    n_rows, n_cols = G.shape
    _launch.check_1d(db, n_cols, "db", where)
    args = [_launch.arg(G, "G"), _launch.arg(Z, "Z"), _launch.arg(db, "db"), None,
            *(_launch.arg(R, "R") for R in copy)]
    args[3] = _launch.arg(_launch.reduction_workspace(0), "ws")  # typed for compiling; sized below
    kernel = _launch.compiled(kernel_fn, args)
    grid, block = _launch.tile_2d(n_rows, n_cols, _launch.max_blocks(kernel))
    ws = _launch.reduction_workspace(grid[1] * n_cols)
    args[3] = _launch.arg(ws, "ws")
    return _launch.prepared(kernel_fn, kernel, grid, block, args, (G, Z, db, ws, *copy))


def sigmoid_delta_backward(G: Any, Z: Any, db: Any) -> None:
    """G <- G Z (1 - Z); db <- column sums of the new G, on CuPy's current stream.
    G, Z (B, O); db (O,)."""
    prepare_sigmoid_delta_backward(G, Z, db)()


def sigmoid_delta_backward_round(G: Any, Z: Any, db: Any, R: Any, fmt: int) -> None:
    """``sigmoid_delta_backward``, and R[:, :O] <- bf16(new G), on CuPy's current stream."""
    prepare_sigmoid_delta_backward_round(G, Z, db, R, fmt)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    sig = (f[:, ::1], f[:, ::1], f[::1], numba.float64[::1])
    rows = [("sigmoid_delta_backward_kernel", sigmoid_delta_backward_kernel.py_func, sig)]
    if dtype == np.float32:
        rows.append(("sigmoid_delta_backward_bf16_kernel", sigmoid_delta_backward_bf16_kernel.py_func,
                     (*sig, numba.uint16[:, ::1])))
    return rows
