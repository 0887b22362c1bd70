"""delta_prev = (D W) * Z * (1 - Z) below a single-unit layer, fused with its column sums: one launch.

Math: ``G[r, c] <- D[r, 0] W[0, c] Z[r, c] (1 - Z[r, c])``; ``db[c] <- sum_r G[r, c]``. Below a layer
of one unit (binary classification's output) the GEMM delta W is an outer product, so it is fused
here instead of running as a separate broadcast multiply and pass over G. Same math and operation
order as ``numpy.multiply(D, W, out=G)`` then ``sigmoid_delta_backward(G, Z, db)``. Reference:
``bp_gpu.steps_numpy.outer_sigmoid_delta_backward``.

Shapes: ``B`` batch rows, ``O`` units of the layer below. D (B, 1), W (1, O), Z, G (B, O), all
C-contiguous; db (O,). ``NB`` row blocks of the grid; ws (1 + NB O,) float64, the reduction workspace.

Launch geometry (``_launch.tile_2d``): as ``sigmoid_delta_backward``: blocks of (TX, TY) threads,
threadIdx.x over columns, threadIdx.y over rows, one wave of the device for this kernel, grid-strided;
per-block column sums into ``ws[1:]``, summed in a fixed order by the last block to finish. One
launch; bit-identical run to run. G is only written, Z read once, D once per column tile.

Mixed precision: the contract's GEMM is ``r(D) r(W)``, so ``outer_sigmoid_delta_backward_bf16_kernel``
and ``_tf32_kernel`` round each factor (bfloat16 or TF32; the product is exact in float32) and the
bf16 one also writes R[r, c] <- bf16(G[r, c]) (R (B, ld) uint16). One body, ``_body``.

Memory-level parallelism: a thread loads ``ROWS`` rows of D and Z before it computes and stores any
row of G (then a ragged tail).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda

from ..precision import BF16, TF32
from . import _launch
from ._bf16 import bf16, check_copy, round_value
from ._launch import MAX_THREADS
from ._reduce import block_sum_rows, last_block, sum_partial_columns

ROWS = 4  # rows loaded before the first store


@cuda.jit(device=True, inline="always")
def _body(D, W, Z, G, db, ws, R, dropped, copy):
    """The kernel body. Constants of each kernel: ``dropped`` (0, or 16 for bfloat16 and 13 for
    TF32): multiply r(delta) r(w), the contract's GEMM operands; ``copy``: R[r, c] <- bf16(G[r, c])."""
    n_rows, n_cols = G.shape  # (B, O)
    one = G.dtype.type(1)
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    tx = cuda.threadIdx.x
    rs = cuda.gridDim.y * cuda.blockDim.y  # row stride of the grid
    for c0 in range(cuda.blockIdx.x * cuda.blockDim.x, n_cols, cuda.gridDim.x * cuda.blockDim.x):
        c = c0 + tx
        acc = 0.0
        if c < n_cols:
            w = W[0, c]
            if dropped != 0:
                w = round_value(w, dropped)
            r = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
            while r + (ROWS - 1) * rs < n_rows:
                d0 = D[r, 0]
                d1 = D[r + rs, 0]
                d2 = D[r + 2 * rs, 0]
                d3 = D[r + 3 * rs, 0]
                if dropped != 0:
                    d0 = round_value(d0, dropped)
                    d1 = round_value(d1, dropped)
                    d2 = round_value(d2, dropped)
                    d3 = round_value(d3, dropped)
                z0 = Z[r, c]
                z1 = Z[r + rs, c]
                z2 = Z[r + 2 * rs, c]
                z3 = Z[r + 3 * rs, c]
                g0 = d0 * w * z0 * (one - z0)  # (delta w) first, as the reference's G = D W
                g1 = d1 * w * z1 * (one - z1)
                g2 = d2 * w * z2 * (one - z2)
                g3 = d3 * w * z3 * (one - z3)
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
                d = D[r, 0]
                if dropped != 0:
                    d = round_value(d, dropped)
                g = d * w * z * (one - z)
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
def outer_sigmoid_delta_backward_kernel(D, W, Z, G, db, ws):
    _body(D, W, Z, G, db, ws, G, 0, False)


@cuda.jit(cache=True)
def outer_sigmoid_delta_backward_bf16_kernel(D, W, Z, G, db, ws, R):
    _body(D, W, Z, G, db, ws, R, 16, True)


@cuda.jit(cache=True)
def outer_sigmoid_delta_backward_tf32_kernel(D, W, Z, G, db, ws):
    _body(D, W, Z, G, db, ws, G, 13, False)


def prepare_outer_sigmoid_delta_backward(D: Any, W: Any, Z: Any, G: Any, db: Any) -> Callable[[], None]:
    """A launch of ``G <- (D W) Z (1 - Z); db <- column sums of G`` on these arrays, on CuPy's
    current stream of now, checked and planned once: calling it only enqueues the kernel.
    D (B, 1), W (1, O), Z, G (B, O), db (O,)."""
    return _prepare(outer_sigmoid_delta_backward_kernel, "outer_sigmoid_delta_backward", D, W, Z, G, db, ())


def prepare_outer_sigmoid_delta_backward_round(D: Any, W: Any, Z: Any, G: Any, db: Any, R: Any,
                                               fmt: int) -> Callable[[], None]:
    """A launch of ``G <- (r(D) r(W)) Z (1 - Z); db <- column sums of G`` and, with R, of
    R[:, :O] <- bf16(G) (``bp_gpu.steps_numpy.outer_sigmoid_delta_backward_round``): fmt BF16 with
    R (B, ld >= O) uint16, or TF32 with R None (cuBLAS rounds the other GEMMs' operands)."""
    where = "outer_sigmoid_delta_backward_round"
    if fmt == TF32 and R is None:
        return _prepare(outer_sigmoid_delta_backward_tf32_kernel, where, D, W, Z, G, db, ())
    if R is None:
        raise ValueError(f"{where}: bfloat16 (fmt={BF16}) needs the copy R; TF32 (fmt={TF32}) takes R=None")
    check_copy(R, G.shape, fmt, where)
    return _prepare(outer_sigmoid_delta_backward_bf16_kernel, where, D, W, Z, G, db, (R,))


def _prepare(kernel_fn: Any, where: str, D: Any, W: Any, Z: Any, G: Any, db: Any, copy: tuple) -> Callable[[], None]:
    _launch.check_2d(Z, None, "Z", where)
    n_rows, n_cols = Z.shape
    _launch.check_2d(D, (n_rows, 1), "D", where)
    _launch.check_2d(W, (1, n_cols), "W", where)
    _launch.check_2d(G, Z.shape, "G", where)
    _launch.check_1d(db, n_cols, "db", where)
    args = [
        _launch.arg(D, "D"),
        _launch.arg(W, "W"),
        _launch.arg(Z, "Z"),
        _launch.arg(G, "G"),
        _launch.arg(db, "db"),
        _launch.arg(_launch.reduction_workspace(0), "ws"),  # typed for compiling; sized below
        *(_launch.arg(R, "R") for R in copy),
    ]
    kernel = _launch.compiled(kernel_fn, args)
    grid, block = _launch.tile_2d(n_rows, n_cols, _launch.max_blocks(kernel))
    ws = _launch.reduction_workspace(grid[1] * n_cols)
    args[5] = _launch.arg(ws, "ws")
    return _launch.prepared(kernel_fn, kernel, grid, block, args, (D, W, Z, G, db, ws, *copy))


def outer_sigmoid_delta_backward(D: Any, W: Any, Z: Any, G: Any, db: Any) -> None:
    """G <- (D W) Z (1 - Z); db <- column sums of G, on CuPy's current stream.
    D (B, 1), W (1, O), Z, G (B, O), db (O,)."""
    prepare_outer_sigmoid_delta_backward(D, W, Z, G, db)()


def outer_sigmoid_delta_backward_round(D: Any, W: Any, Z: Any, G: Any, db: Any, R: Any, fmt: int) -> None:
    """G <- (r(D) r(W)) Z (1 - Z); db <- column sums of G; R[:, :O] <- bf16(G) unless R is None,
    on CuPy's current stream."""
    prepare_outer_sigmoid_delta_backward_round(D, W, Z, G, db, R, fmt)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    f2, f1, d1 = f[:, ::1], f[::1], numba.float64[::1]
    sig = (f2, f2, f2, f2, f1, d1)
    rows = [("outer_sigmoid_delta_backward_kernel", outer_sigmoid_delta_backward_kernel.py_func, sig)]
    if dtype == np.float32:
        rows += [
            ("outer_sigmoid_delta_backward_bf16_kernel", outer_sigmoid_delta_backward_bf16_kernel.py_func,
             (*sig, numba.uint16[:, ::1])),
            ("outer_sigmoid_delta_backward_tf32_kernel", outer_sigmoid_delta_backward_tf32_kernel.py_func, sig),
        ]
    return rows
