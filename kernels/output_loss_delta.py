"""The output layer in one pass and one launch: sigmoid, delta, bias gradient and loss from the output GEMM.

Math, with a = A + b and s = T (positive_class=1) or 1 - T (positive_class=0, the notes), and
S = sum_{r,c} (softplus(a) - s a) (unscaled):
``D <- scale (sigma(a) - s)``; ``db <- sum_r D[r, :]``; ``loss[0] <- scale S``; ``loss[1] += S``
(the notes' delta_out = sigma(a_out) - (1 - t) and L = -(1-t) log y - t log(1-y), written as
softplus so it is finite for every finite a). ``scale`` is 1/B for a mean loss: folded in here, it
flows linearly through every later delta and gradient. ``loss[1]`` is a running sum of S, which a
training loop zeroes once per epoch and reads once per epoch (the sum of B x mean batch loss). A is
left as it was. Reference: ``bp_gpu.steps_numpy.output_loss_delta``.

Shapes: ``B`` batch rows, ``O`` output units, ``NB`` row blocks and ``NBLK`` blocks of the grid.
A, T, D (B, O) C-contiguous; b, db (O,); loss (2,) float64; ws (1 + NBLK + NB O,) float64, the
reduction workspace: ticket, per-block loss sums, (NB, O) per-block column sums of D.

Launch geometry (``_launch.tile_2d``): blocks of (TX, TY) threads, threadIdx.x over columns,
threadIdx.y over rows, one wave of the device for this kernel; narrow outputs (O = 1) get blocks
one column wide. Each block writes D, its column sums and its loss sum (float64, fixed-order trees
in shared memory) into the workspace; the last block to finish (``_reduce.last_block``) sums them in
a fixed order into db and loss. One launch; bit-identical run to run.

Mixed precision: ``output_loss_delta_bf16_kernel`` also writes R[r, c] <- bf16(D[r, c]) (R (B, ld)
uint16), the copy of the delta the GEMMs read; db and the loss stay the float32 D's.

Memory-level parallelism: a thread loads ``ROWS`` rows of A and T before it computes and stores any
row of D (then a ragged tail): the compiler cannot hoist a load above a store to D, which it cannot
prove does not alias A or T.
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
from ._reduce import block_sum, block_sum_rows, last_block, sigmoid, softplus64, sum_partial_columns, sum_partials

ROWS = 4  # rows loaded before the first store


@cuda.jit(device=True, inline="always")
def _unit(a, t, positive_class, sc, one):
    """(D, float64 loss term) of one logit a (bias added) and target t."""
    s = t if positive_class == 1 else one - t
    a64 = float(a)
    return (sigmoid(a, one) - s) * sc, softplus64(a64) - float(s) * a64


@cuda.jit(device=True, inline="always")
def _body(A, b, T, positive_class, scale, D, db, loss, ws, R, copy):
    """The kernel body; ``copy`` (a constant of each kernel): also R[r, c] <- bf16(D[r, c])."""
    n_rows, n_cols = A.shape  # (B, O)
    one = A.dtype.type(1)
    sc = A.dtype.type(scale)
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    tx = cuda.threadIdx.x
    rs = cuda.gridDim.y * cuda.blockDim.y  # row stride of the grid
    n_blocks = cuda.gridDim.x * cuda.gridDim.y
    col_base = 1 + n_blocks  # ws: [ticket | NBLK loss sums | (NB, O) column sums]
    loss_acc = 0.0
    for c0 in range(cuda.blockIdx.x * cuda.blockDim.x, n_cols, cuda.gridDim.x * cuda.blockDim.x):
        c = c0 + tx
        acc = 0.0
        if c < n_cols:
            bc = b[c]
            r = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
            while r + (ROWS - 1) * rs < n_rows:
                a0 = A[r, c]
                a1 = A[r + rs, c]
                a2 = A[r + 2 * rs, c]
                a3 = A[r + 3 * rs, c]
                t0 = T[r, c]
                t1 = T[r + rs, c]
                t2 = T[r + 2 * rs, c]
                t3 = T[r + 3 * rs, c]
                d0, l0 = _unit(a0 + bc, t0, positive_class, sc, one)
                d1, l1 = _unit(a1 + bc, t1, positive_class, sc, one)
                d2, l2 = _unit(a2 + bc, t2, positive_class, sc, one)
                d3, l3 = _unit(a3 + bc, t3, positive_class, sc, one)
                D[r, c] = d0
                D[r + rs, c] = d1
                D[r + 2 * rs, c] = d2
                D[r + 3 * rs, c] = d3
                if copy:
                    R[r, c] = bf16(d0)
                    R[r + rs, c] = bf16(d1)
                    R[r + 2 * rs, c] = bf16(d2)
                    R[r + 3 * rs, c] = bf16(d3)
                acc += d0
                acc += d1
                acc += d2
                acc += d3
                loss_acc += l0
                loss_acc += l1
                loss_acc += l2
                loss_acc += l3
                r += ROWS * rs
            while r < n_rows:
                d, term = _unit(A[r, c] + bc, T[r, c], positive_class, sc, one)
                D[r, c] = d
                if copy:
                    R[r, c] = bf16(d)
                acc += d
                loss_acc += term
                r += rs
        total = block_sum_rows(sh, acc)
        if cuda.threadIdx.y == 0 and c < n_cols:
            ws[col_base + cuda.blockIdx.y * n_cols + c] = total
    block_loss = block_sum(sh, loss_acc)
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        ws[1 + cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x] = block_loss
    if last_block(ws, sh):
        sum_partial_columns(ws, col_base, cuda.gridDim.y, n_cols, db, sh)
        S = sum_partials(ws, 1, n_blocks, sh)
        if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
            loss[0] = scale * S
            loss[1] += S


@cuda.jit(cache=True)
def output_loss_delta_kernel(A, b, T, positive_class, scale, D, db, loss, ws):
    _body(A, b, T, positive_class, scale, D, db, loss, ws, D, False)


@cuda.jit(cache=True)
def output_loss_delta_bf16_kernel(A, b, T, positive_class, scale, D, db, loss, ws, R):
    _body(A, b, T, positive_class, scale, D, db, loss, ws, R, True)


def prepare_output_loss_delta(
    A: Any,
    b: Any,
    T: Any,
    positive_class: int,
    scale: float,
    D: Any,
    db: Any,
    loss: Any,
) -> Callable[[], None]:
    """A launch of the output step (see ``output_loss_delta``) on these arrays and scalars, on CuPy's
    current stream of now, checked and planned once: calling it only enqueues the kernel.
    A, T, D (B, O); b, db (O,); loss (2,) float64."""
    return _prepare(output_loss_delta_kernel, "output_loss_delta", A, b, T, positive_class, scale, D, db, loss, ())


def prepare_output_loss_delta_round(A: Any, b: Any, T: Any, positive_class: int, scale: float, D: Any, db: Any,
                                    loss: Any, R: Any, fmt: int) -> Callable[[], None]:
    """``prepare_output_loss_delta`` whose kernel also writes R[:, :O] <- bf16(D), the copy the
    GEMMs read (``bp_gpu.steps_numpy.output_loss_delta_round``).  R (B, ld >= O) uint16; fmt BF16."""
    where = "output_loss_delta_round"
    check_copy(R, A.shape, fmt, where)
    return _prepare(output_loss_delta_bf16_kernel, where, A, b, T, positive_class, scale, D, db, loss, (R,))


def _prepare(kernel_fn: Any, where: str, A: Any, b: Any, T: Any, positive_class: int, scale: float, D: Any, db: Any,
             loss: Any, copy: tuple) -> Callable[[], None]:
    _launch.check_2d(A, None, "A", where)
    n_rows, n_cols = A.shape
    _launch.check_1d(b, n_cols, "b", where)
    _launch.check_2d(T, A.shape, "T", where)
    _launch.check_2d(D, A.shape, "D", where)
    _launch.check_1d(db, n_cols, "db", where)
    _launch.check_1d(loss, 2, "loss", where)
    if loss.dtype != np.float64:
        raise TypeError(f"{where}: loss must be float64; got {loss.dtype}")
    if positive_class not in (0, 1):
        raise ValueError(f"{where}: positive_class must be 0 or 1; got {positive_class!r}")
    args = [
        _launch.arg(A, "A"),
        _launch.arg(b, "b"),
        _launch.arg(T, "T"),
        int(positive_class),
        float(scale),
        _launch.arg(D, "D"),
        _launch.arg(db, "db"),
        _launch.arg(loss, "loss"),
        _launch.arg(_launch.reduction_workspace(0), "ws"),  # typed for compiling; sized below
        *(_launch.arg(R, "R") for R in copy),
    ]
    kernel = _launch.compiled(kernel_fn, args)
    grid, block = _launch.tile_2d(n_rows, n_cols, _launch.max_blocks(kernel))
    ws = _launch.reduction_workspace(grid[0] * grid[1] + grid[1] * n_cols)
    args[8] = _launch.arg(ws, "ws")
    return _launch.prepared(kernel_fn, kernel, grid, block, args, (A, b, T, D, db, loss, ws, *copy))


def output_loss_delta(
    A: Any,
    b: Any,
    T: Any,
    positive_class: int,
    scale: float,
    D: Any,
    db: Any,
    loss: Any,
) -> None:
    """D <- scale (sigma(A + b) - s); db <- column sums of D; with S = sum(softplus(a) - s a):
    loss[0] <- scale S, loss[1] += S. On CuPy's current stream.
    A, T, D (B, O); b, db (O,); loss (2,) float64."""
    prepare_output_loss_delta(A, b, T, positive_class, scale, D, db, loss)()


def output_loss_delta_round(A: Any, b: Any, T: Any, positive_class: int, scale: float, D: Any, db: Any, loss: Any,
                            R: Any, fmt: int) -> None:
    """``output_loss_delta``, and R[:, :O] <- bf16(D), on CuPy's current stream."""
    prepare_output_loss_delta_round(A, b, T, positive_class, scale, D, db, loss, R, fmt)()


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    f2, f1, d1, i8, d = f[:, ::1], f[::1], numba.float64[::1], numba.int64, numba.float64
    sig = (f2, f1, f2, i8, d, f2, f1, d1, d1)
    rows = [("output_loss_delta_kernel", output_loss_delta_kernel.py_func, sig)]
    if dtype == np.float32:
        rows.append(("output_loss_delta_bf16_kernel", output_loss_delta_bf16_kernel.py_func,
                     (*sig, numba.uint16[:, ::1])))
    return rows
