"""Device helpers of mixed precision: float32 -> bfloat16 bits and TF32 rounding, integer code on
the float's bits, and the weight map the optimizer writes r(W) by.

Math: ``bp_gpu.precision.round_bf16`` / ``round_tf32`` (round to nearest, ties to even; NaN stays a
quiet NaN), the same integer arithmetic line for line. A bfloat16 copy on the device is its 16 bits
in a uint16 array, the upper half of the rounded float32 (cuBLAS reads it as ``CUDA_R_16BF``).

Why not ``numba.cuda.bf16`` or libdevice's conversions: Numba's simulator implements neither, and
the simulator tests must run these very kernels. What the simulator cannot run is only the bit
cast itself: on a device ``libdevice.float_as_int`` / ``int_as_float`` (``__nv_float_as_int``, a
reinterpretation, no arithmetic; Numba's scalar ``.view`` needs a live device to compile), in the
simulator NumPy's ``view`` of the same 32 bits. The rounding is the same code in both.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import cuda
from numba.cuda import libdevice

from . import _launch

_u32 = numba.uint32

if _launch.SIMULATOR:

    @cuda.jit(device=True, inline="always")
    def float_bits(x):
        """The 32 bits of float32 x, as uint32."""
        return np.float32(x).view(np.uint32)

    @cuda.jit(device=True, inline="always")
    def bits_float(u):
        """The float32 whose bits are u."""
        return np.uint32(u).view(np.float32)

else:

    @cuda.jit(device=True, inline="always")
    def float_bits(x):
        """The 32 bits of float32 x, as uint32 (the cast lets a float64 kernel type its dead copy
        branch; for float32 it is no operation)."""
        return _u32(libdevice.float_as_int(numba.float32(x)))

    @cuda.jit(device=True, inline="always")
    def bits_float(u):
        """The float32 whose bits are u."""
        return libdevice.int_as_float(numba.int32(u))


@cuda.jit(device=True, inline="always")
def rounded_bits(u, dropped):
    """float32 bits u rounded to keep 23 - ``dropped`` mantissa bits (nearest, ties to even); a NaN
    stays a quiet NaN (a payload in the dropped bits alone would round to inf)."""
    nan = (u & _u32(0x7FFFFFFF)) > _u32(0x7F800000)
    quiet = _u32(0x00400000) if nan else _u32(0)
    half = _u32(_u32(_u32(1) << _u32(dropped - _u32(1))) - _u32(1))  # half an ulp, less one
    bias = _u32(0) if nan else _u32(half + _u32((u >> _u32(dropped)) & _u32(1)))
    return _u32(_u32(_u32(u | quiet) + bias) & _u32(_u32(0xFFFFFFFF) << _u32(dropped)))


@cuda.jit(device=True, inline="always")
def bf16(x):
    """The bfloat16 bits (uint16) of float32 x: ``bp_gpu.precision.bf16_bits``."""
    return numba.uint16(rounded_bits(float_bits(x), 16) >> _u32(16))


@cuda.jit(device=True, inline="always")
def round_value(x, dropped):
    """float32 x rounded to bfloat16 (dropped = 16) or TF32 (13), as a float32 value."""
    return bits_float(rounded_bits(float_bits(x), dropped))


@cuda.jit(device=True, inline="always")
def copy_index(wmap, i):
    """Where flat weight i (i < n_weights) goes in the weight copy: ``wmap`` (L, 5) int64 rows
    (start, rows, cols, dst, ld) per layer (``bp_gpu.engine``); the layer is found by a scan (L is a
    handful), the row by one division."""
    l = 0
    while l + 1 < wmap.shape[0] and i >= wmap[l + 1, 0]:
        l += 1
    k = int(i - wmap[l, 0])  # int(): a kernel without copies types this with a float placeholder map
    cols = int(wmap[l, 2])
    r = k // cols
    return int(wmap[l, 3]) + r * int(wmap[l, 4]) + (k - r * cols)


def check_copy(R: Any, shape: tuple[int, int], fmt: int, where: str) -> None:
    """Raise unless R can hold the bfloat16 copy of a (B, O) array: a C-contiguous uint16 (B, ld)
    array with ld >= O (each row padded; the kernels write R[:, :O]), and ``fmt`` bfloat16 (the only
    format a CUDA copy is kept in: TF32 operands are rounded by cuBLAS)."""
    from ..precision import BF16

    if fmt != BF16:
        raise ValueError(f"{where}: CUDA keeps bfloat16 copies only (fmt={BF16}); got fmt={fmt!r}")
    if R.dtype != np.uint16:
        raise TypeError(f"{where}: R must hold bfloat16 bits as uint16; got {R.dtype}")
    B, O = shape
    if R.ndim != 2 or R.shape[0] != B or R.shape[1] < O:
        raise ValueError(f"{where}: R must have shape ({B}, ld >= {O}); got shape {tuple(R.shape)}")
    if not R.flags.c_contiguous:
        raise ValueError(f"{where}: R must be C-contiguous")


def check_weight_copy(R: Any, wmap: Any, n_weights: int, fmt: int, where: str) -> None:
    """Raise unless R and wmap describe bfloat16 copies of the first ``n_weights`` parameters: R a
    contiguous uint16 buffer, wmap an (L, 5) int64 map (start, rows, cols, dst, ld) whose layers
    cover the weights, each copy inside R."""
    from ..precision import BF16

    if fmt != BF16:
        raise ValueError(f"{where}: CUDA keeps bfloat16 copies only (fmt={BF16}); got fmt={fmt!r}")
    if R.dtype != np.uint16 or R.ndim != 1 or not R.flags.c_contiguous:
        raise ValueError(f"{where}: R must be a contiguous 1-D uint16 buffer; got {R.dtype}{tuple(R.shape)}")
    if wmap.dtype != np.int64 or wmap.ndim != 2 or wmap.shape[1] != 5 or not wmap.flags.c_contiguous:
        raise ValueError(f"{where}: wmap must be a C-contiguous (L, 5) int64 array; "
                         f"got {wmap.dtype}{tuple(wmap.shape)}")
    rows = np.asarray(wmap.get() if hasattr(wmap, "get") else wmap)
    start, n, cols, dst, ld = (rows[:, k] for k in range(5))
    ends = start + n * cols
    if (start[0] != 0 or ends[-1] != n_weights or (start[1:] != ends[:-1]).any() or (ld < cols).any()
            or (dst + n * ld > R.shape[0]).any()):
        raise ValueError(f"{where}: wmap {rows.tolist()} does not map {n_weights} weights into R ({R.shape[0]},)")
