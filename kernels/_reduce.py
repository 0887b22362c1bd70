"""Device helpers shared by the kernels: stable sigmoid/softplus, fixed-order block reductions and
the last-block ticket of the one-launch grid reductions.

Block reductions use a float64 shared-memory scratch of ``MAX_THREADS`` entries and a tree whose
shape depends only on the block shape (powers of two, see ``_launch.tile_2d``): the same inputs
give bit-identical sums on every run. No warp shuffles (the simulator has none) and no float
atomics on the sums (their order varies). Every helper that synchronizes must be called by all
threads of the block at the same point: never from inside a thread-dependent branch.

One-launch grid reductions (the CUDA C++ Programming Guide's "Memory Fence Functions" example,
https://docs.nvidia.com/cuda/cuda-c-programming-guide/#memory-fence-functions): each block writes
its partial sums into a float64 workspace ``ws[1:]``, then takes a ticket from ``ws[0]`` with an
atomic add; the block that draws the last ticket has seen every other block's partials and sums
them in a fixed order (the order of the partials, not of the blocks' finishing), then resets the
ticket to 0 for the next launch. Tickets are small integers in a float64, exact under atomic adds.

Reference: the NumPy reductions in ``bp_gpu.steps_numpy`` (``D.sum(axis=0)``, ``sum(...)``).
"""

from __future__ import annotations

import math

from numba import cuda


@cuda.jit(device=True, inline="always")
def sigmoid(a, one):
    """sigma(a) = 1 / (1 + e^-a) in the type of ``one``; exp(-|a|) <= 1 never overflows."""
    e = math.exp(-abs(a))
    r = one / (one + e)
    return r if a >= 0 else e * r  # e / (1 + e) for a < 0


@cuda.jit(device=True, inline="always")
def softplus64(x):
    """log(1 + e^x) for a float64 x, finite for every finite x."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@cuda.jit(device=True, inline="always")
def block_sum_rows(sh, acc):
    """Sum ``acc`` over threadIdx.y for each threadIdx.x; every thread gets its column's total.

    sh: float64 shared scratch of at least blockDim.x * blockDim.y entries; blockDim.y a power of 2.
    """
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tw = cuda.blockDim.x
    cuda.syncthreads()  # the previous call's readers are done with sh
    sh[ty * tw + tx] = acc
    cuda.syncthreads()
    s = cuda.blockDim.y // 2
    while s > 0:  # the same s in every thread: the syncthreads below is reached by all
        if ty < s:
            sh[ty * tw + tx] += sh[(ty + s) * tw + tx]
        cuda.syncthreads()
        s //= 2
    return sh[tx]


@cuda.jit(device=True, inline="always")
def block_sum(sh, acc):
    """Sum ``acc`` over every thread of the block; every thread gets the total.

    sh: float64 shared scratch of at least blockDim.x * blockDim.y entries, a power of 2.
    """
    t = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    cuda.syncthreads()
    sh[t] = acc
    cuda.syncthreads()
    s = (cuda.blockDim.x * cuda.blockDim.y) // 2
    while s > 0:
        if t < s:
            sh[t] += sh[t + s]
        cuda.syncthreads()
        s //= 2
    return sh[0]


@cuda.jit(device=True, inline="always")
def last_block(ws, sh):
    """True, in every thread, in the one block of the grid that finishes last; False elsewhere.

    Called by every thread after its block has written its partials into ``ws[1:]``. ws: float64
    workspace, ws[0] the ticket (0 before the launch; reset to 0 by the last block). sh: the
    block's float64 shared scratch (its element 0 carries the answer to the block's threads).
    """
    # Release: every thread's partial writes are visible device-wide before its block's ticket.
    cuda.threadfence()
    cuda.syncthreads()
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        n_blocks = cuda.gridDim.x * cuda.gridDim.y
        ticket = cuda.atomic.add(ws, 0, 1.0)
        last = ticket == n_blocks - 1
        if last:
            ws[0] = 0.0  # every block has drawn its ticket; the next launch starts from 0
            cuda.threadfence()  # acquire: the partials are read after the ticket
        sh[0] = 1.0 if last else 0.0
    cuda.syncthreads()
    return sh[0] != 0.0


@cuda.jit(device=True, inline="always")
def sum_partial_columns(ws, base, n_parts, n_cols, out, sh):
    """out[c] <- sum_k ws[base + k n_cols + c], k = 0..n_parts-1, for every column c; called by
    every thread of one block. The order of the terms depends only on the block shape."""
    tx = cuda.threadIdx.x
    for c0 in range(0, n_cols, cuda.blockDim.x):  # the same bounds in every thread (syncthreads)
        c = c0 + tx
        acc = 0.0
        if c < n_cols:
            for k in range(cuda.threadIdx.y, n_parts, cuda.blockDim.y):
                acc += ws[base + k * n_cols + c]
        total = block_sum_rows(sh, acc)
        if cuda.threadIdx.y == 0 and c < n_cols:
            out[c] = total


@cuda.jit(device=True, inline="always")
def sum_partials(ws, base, n_parts, sh):
    """sum_k ws[base + k], k = 0..n_parts-1, in a fixed order; every thread of the block gets it."""
    acc = 0.0
    nt = cuda.blockDim.x * cuda.blockDim.y
    for k in range(cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x, n_parts, nt):
        acc += ws[base + k]
    return block_sum(sh, acc)
