"""The output layer in one pass: sigmoid, delta, bias gradient and loss from the output GEMM.

Math, with a = A + b and s = T (positive_class=1) or 1 - T (positive_class=0, the notes):
``D <- scale (sigma(a) - s)``; ``db <- sum_r D[r, :]``; ``loss[0] <- scale sum_{r,c} (softplus(a) - s a)``
(the notes' delta_out = sigma(a_out) - (1 - t) and L = -(1-t) log y - t log(1-y), written as
softplus so it is finite for every finite a). ``scale`` is 1/B for a mean loss: folded in here, it
flows linearly through every later delta and gradient. A is left as it was.
Reference: ``bp_gpu.steps_numpy.output_loss_delta``.

Shapes: ``B`` batch rows, ``O`` output units, ``NB`` row blocks and ``NBLK`` blocks of the grid.
A, T, D (B, O) C-contiguous; b, db (O,); loss (1,) float64.

Launch geometry (``_launch.tile_2d``): blocks of (TX, TY) threads, threadIdx.x over columns,
threadIdx.y over rows; narrow outputs (O = 1) get blocks one column wide. Stage 1
(``output_loss_delta_kernel``) writes D, per-block column sums of D into a (NB, O) workspace and
per-block loss sums (float64) into a (NBLK,) workspace; stage 2 (``output_loss_delta_finish_kernel``)
reduces both in a fixed order: blocks 0..gx-1 the columns, the last block the loss. With a single
block, stage 1 writes db and loss directly: one launch.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import cuda

from . import _launch
from ._launch import MAX_THREADS
from ._reduce import block_sum, block_sum_rows, sigmoid, softplus64


@cuda.jit
def output_loss_delta_kernel(A, b, T, positive_class, scale, D, db_partial, loss_partial, loss_scale):
    n_rows, n_cols = A.shape  # (B, O)
    one = A.dtype.type(1)
    sc = A.dtype.type(scale)
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    tx = cuda.threadIdx.x
    row_step = cuda.gridDim.y * cuda.blockDim.y
    loss_acc = 0.0
    for c0 in range(cuda.blockIdx.x * cuda.blockDim.x, n_cols, cuda.gridDim.x * cuda.blockDim.x):
        c = c0 + tx
        acc = 0.0
        if c < n_cols:
            bc = b[c]
            for r in range(cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y, n_rows, row_step):
                a = A[r, c] + bc
                t = T[r, c]
                s = t if positive_class == 1 else one - t
                d = (sigmoid(a, one) - s) * sc
                D[r, c] = d
                acc += d
                a64 = float(a)
                loss_acc += softplus64(a64) - float(s) * a64
        total = block_sum_rows(sh, acc)
        if cuda.threadIdx.y == 0 and c < n_cols:
            db_partial[cuda.blockIdx.y, c] = total  # (NB, O)
    block_loss = block_sum(sh, loss_acc)
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        loss_partial[cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x] = block_loss * loss_scale


@cuda.jit
def output_loss_delta_finish_kernel(db_partial, loss_partial, scale, db, loss):
    """db[c] <- sum_k db_partial[k, c]; loss[0] <- scale sum_k loss_partial[k]; fixed order.
    db_partial (NB, O), loss_partial (NBLK,), db (O,), loss (1,). Grid: gx column blocks + 1."""
    n_rows, n_cols = db_partial.shape
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    # The branch depends on the block only, so each block's syncthreads are reached by all its threads.
    if cuda.blockIdx.x == cuda.gridDim.x - 1:
        acc = 0.0
        nt = cuda.blockDim.x * cuda.blockDim.y
        for k in range(cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x, loss_partial.shape[0], nt):
            acc += loss_partial[k]
        total = block_sum(sh, acc)
        if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
            loss[0] = total * scale
            loss[1] += total
    else:
        step = (cuda.gridDim.x - 1) * cuda.blockDim.x
        for c0 in range(cuda.blockIdx.x * cuda.blockDim.x, n_cols, step):
            c = c0 + cuda.threadIdx.x
            acc = 0.0
            if c < n_cols:
                for k in range(cuda.threadIdx.y, n_rows, cuda.blockDim.y):
                    acc += db_partial[k, c]
            total = block_sum_rows(sh, acc)
            if cuda.threadIdx.y == 0 and c < n_cols:
                db[c] = total


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
    """D <- scale (sigma(A + b) - s); db <- column sums of D; loss[0] <- scale sum(softplus(a) - s a),
    on CuPy's current stream.  A, T, D (B, O); b, db (O,); loss (1,) float64."""
    where = "output_loss_delta"
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
    grid, block = _launch.tile_2d(n_rows, n_cols)
    stream = _launch.stream()
    n_blocks = grid[0] * grid[1]
    db_partial = _launch.workspace("column_partials", A.dtype, grid[1] * n_cols)
    db_partial = db_partial[: grid[1] * n_cols].reshape(grid[1], n_cols)  # (NB, O)
    loss_partial = _launch.workspace("loss_partials", np.float64, n_blocks)[:n_blocks]  # (NBLK,)
    loss_scale = 1.0
    output_loss_delta_kernel[grid, block, stream](
        _launch.arg(A, "A"),
        _launch.arg(b, "b"),
        _launch.arg(T, "T"),
        int(positive_class),
        float(scale),
        _launch.arg(D, "D"),
        _launch.arg(db_partial, "db_partial"),
        _launch.arg(loss_partial, "loss_partial"),
        loss_scale,
    )
    if True:  # the running sum loss[1] is added in stage 2
        (gx, _), fblock = _launch.tile_2d(*db_partial.shape)
        output_loss_delta_finish_kernel[(gx + 1, 1), fblock, stream](
            _launch.arg(db_partial, "db_partial"),
            _launch.arg(loss_partial, "loss_partial"),
            float(scale),
            _launch.arg(db, "db"),
            _launch.arg(loss, "loss"),
        )


def signatures(dtype: Any) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel here, for compile checks."""
    f = numba.from_dtype(dtype)
    f2, f1, d1, i8, d = f[:, ::1], f[::1], numba.float64[::1], numba.int64, numba.float64
    return [
        ("output_loss_delta_kernel", output_loss_delta_kernel.py_func, (f2, f1, f2, i8, d, f2, f2, d1, d)),
        ("output_loss_delta_finish_kernel", output_loss_delta_finish_kernel.py_func, (f2, d1, d, f1, d1)),
    ]
