"""Mixed precision: the names, and the rounding of GEMM operands to TF32 and bfloat16, in NumPy.

A network's ``precision`` says how its GEMMs treat their operands (docs/math.md, "Mixed
precision: the rounding contract"): ``"highest"`` multiplies the stored values as they are;
``"tf32"`` and ``"bf16"`` first round every GEMM operand, r(.), to that format and accumulate the
exact products in float32. Only
GEMM operands are rounded; activations, deltas, master weights, optimizer state and updates stay
float32.

``round_bf16`` and ``round_tf32`` are the specification of r(.): integer operations on the bits of
the float32 value, round to nearest, ties to even, NaN stays NaN. Every backend rounds this way (the
Numba CPU steps and the CUDA kernels use the same integer arithmetic, ``bp_gpu.cpu_steps`` and
``bp_gpu.kernels._bf16``); on CUDA the TF32 rounding of a GEMM's operands is cuBLAS's own
(``CUBLAS_COMPUTE_32F_FAST_TF32``, see docs/math.md).

Storage of a bfloat16 value on a device: its 16 bits, the upper half of the float32 (``bf16_bits``,
``from_bf16_bits``); CuPy has no bfloat16 dtype, so device copies are ``uint16`` arrays that cuBLAS
reads as ``CUDA_R_16BF``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PRECISIONS = ("highest", "tf32", "bf16")

# Operand formats as the kernels and the compiled steps take them (plain ints: a Numba argument).
NONE, BF16, TF32 = 0, 1, 2
FORMATS = {"highest": NONE, "tf32": TF32, "bf16": BF16}

# Bits dropped from a float32's 23-bit mantissa: bfloat16 keeps 7 explicit bits, TF32 10.
DROPPED = {BF16: 16, TF32: 13}

_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)
_QUIET = np.uint32(0x00400000)


def check_precision(precision: Any, dtype: Any) -> str:
    """``precision`` as one of ``PRECISIONS``, checked against the network's ``dtype``; raises
    ValueError naming the choices for an unknown name, and for ``"tf32"``/``"bf16"`` with a dtype
    other than float32 (their master weights are float32)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of 'highest', 'tf32', 'bf16'; got {precision!r}")
    if precision != "highest" and np.dtype(dtype) != np.float32:
        raise ValueError(
            f"precision={precision!r} needs dtype='float32' (float32 master weights, {precision} GEMM operands); "
            f"got dtype='{np.dtype(dtype).name}'. Use dtype='float32', or precision='highest' for float64"
        )
    return precision


def _round_bits(x: Any, dropped: int) -> np.ndarray:
    """float32 bits of x rounded to keep 23 - ``dropped`` mantissa bits (nearest, ties to even)."""
    u = np.array(x, dtype=np.float32, copy=True).view(np.uint32)
    mask = np.uint32((0xFFFFFFFF << dropped) & 0xFFFFFFFF)
    half = np.uint32((1 << (dropped - 1)) - 1)
    nan = (u & _ABS) > _INF
    # Adding half an ulp minus one, plus the kept part's lowest bit, carries exactly when the dropped
    # bits are above the half or at the half with an odd kept part: ties to even. A carry out of the
    # mantissa raises the exponent, which is the right answer (up to inf past the largest value).
    with np.errstate(over="ignore"):
        r = (u + half + ((u >> np.uint32(dropped)) & np.uint32(1))) & mask
    # A NaN whose payload sits in the dropped bits would round to inf: keep it a (quiet) NaN.
    return np.where(nan, (u | _QUIET) & mask, r)


def round_bf16(x: Any) -> np.ndarray:
    """x (float32 values) rounded to bfloat16 (8 significant bits, float32's exponent range), as
    float32: round to nearest, ties to even; bit-exact with ``ml_dtypes.bfloat16`` for every
    non-NaN input; NaN stays NaN."""
    return _round_bits(x, DROPPED[BF16]).view(np.float32)


def round_tf32(x: Any) -> np.ndarray:
    """x (float32 values) rounded to TF32 (11 significant bits, float32's exponent range), as
    float32: round to nearest, ties to even; NaN stays NaN."""
    return _round_bits(x, DROPPED[TF32]).view(np.float32)


def round_to(x: Any, fmt: int) -> np.ndarray:
    """``round_bf16`` or ``round_tf32`` by format code (``BF16``, ``TF32``); ``NONE``: x as float32."""
    if fmt == NONE:
        return np.array(x, dtype=np.float32)
    if fmt not in DROPPED:
        raise ValueError(f"unknown operand format {fmt!r}; formats: NONE={NONE}, BF16={BF16}, TF32={TF32}")
    return _round_bits(x, DROPPED[fmt]).view(np.float32)


def bf16_bits(x: Any) -> np.ndarray:
    """The 16 bits of each ``round_bf16(x)`` as uint16: how a device stores a bfloat16 copy."""
    return (_round_bits(x, DROPPED[BF16]) >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(bits: Any) -> np.ndarray:
    """The float32 values of bfloat16 bits (uint16): exact, the inverse of ``bf16_bits``."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
