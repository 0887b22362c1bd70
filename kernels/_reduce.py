"""Device helpers shared by the kernels: stable sigmoid/softplus and fixed-order block reductions.

Block reductions use a float64 shared-memory scratch of ``MAX_THREADS`` entries and a tree whose
shape depends only on the block shape (powers of two, see ``_launch.tile_2d``): the same inputs
give bit-identical sums on every run. No warp shuffles (the simulator has none) and no float
atomics (their order varies). Every helper that synchronizes must be called by all threads of the
block at the same point: never from inside a thread-dependent branch.

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
