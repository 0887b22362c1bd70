"""The CPU backend's fused forward/backward steps: ``bp_gpu.steps_numpy`` compiled with Numba, one pass
each (the optimizer steps are in ``bp_gpu.cpu_optimizer``).

Same signatures and in-place semantics as ``bp_gpu.steps_numpy`` (the readable spec these are
tested against, ``tests/test_cpu_steps.py``). Why they exist: the NumPy expressions make several
passes over each (B, O) array and allocate temporaries; on a small network (``[28, 64, 64, 1]``)
those passes, not the GEMMs, bound a training step. Here each step is one vectorized loop.

Why single-threaded: the GEMMs between the steps run on OpenBLAS's threads, which busy-wait for a
while after each call. A Numba ``parallel=True`` step (OpenMP layer) then waits for cores those
threads hold: measured on 2 cores, an epoch of ``[28, 64, 64, 1]`` went from 0.09 s to 12 s. The
steps are memory- or exp-bound and a few percent of a step even on ``[256, 1024, 1024, 1]``, so
one thread costs little and never fights the BLAS pool.

Shapes: ``B`` batch rows, ``O`` units of the layer, ``P`` parameters in the flat buffer.

Accuracy: float64 uses libm's ``exp`` and ``log1p``. float32 uses ``_exp_f32`` and ``_log1p_f32``
below (range reduction and a short polynomial each), which LLVM vectorizes where libm's ``expf`` /
``log1pf`` would be called once per element; relative error about 1e-7, i.e. float32 rounding.
The float32 output step sums its loss and column sums in float64 (as the spec's loss does).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

# Every fast-math licence except ``reassoc`` (it would undo the two-constant range reduction
# x - n*ln2_hi - n*ln2_lo) and ``nnan``/``ninf`` (a NaN must come out as NaN, not as garbage).
_FASTMATH = {"nsz", "arcp", "contract", "afn"}
# error_model="numpy": a float division by zero gives inf instead of raising, which is what lets
# LLVM vectorize loops that divide.
_JIT = dict(fastmath=_FASTMATH, error_model="numpy", cache=True, nogil=True)

_f32 = np.float32
_i32 = np.int32


@nb.njit(inline="always", **_JIT)
def _exp_f32(x):
    """exp(x) for float32 x: exp(x) = 2^n exp(r), n = round(x / ln2), |r| <= ln2 / 2."""
    # Beyond [-87, 88] exp leaves the normal float32 range; sigma only needs the limit values.
    x = min(max(x, _f32(-87.0)), _f32(88.0))
    # Round to nearest by adding and removing 1.5 * 2^23 (stays float32 and vectorizes, where
    # math.floor returns an int64 and np.floor calls floorf).
    n = (x * _f32(1.44269504) + _f32(12582912.0)) - _f32(12582912.0)
    r = x - n * _f32(0.693359375) - n * _f32(-2.12194440e-4)  # ln2 split so n * hi is exact
    p = _f32(1.9875691500e-4)  # Cephes expf minimax coefficients
    p = p * r + _f32(1.3981999507e-3)
    p = p * r + _f32(8.3334519073e-3)
    p = p * r + _f32(4.1665795894e-2)
    p = p * r + _f32(1.6666665459e-1)
    p = p * r + _f32(5.0000001201e-1)
    p = p * r * r + r + _f32(1.0)
    # 2^n built from its bits (exponent field n + 127; n is in [-126, 127] after the clamp).
    return p * _i32((_i32(n) + _i32(127)) << _i32(23)).view(np.float32)


@nb.njit(inline="always", **_JIT)
def _log1p_f32(e):
    """log(1 + e) for float32 e in [0, 1] (the softplus term; e = exp(-|a|))."""
    # Reduce 1 + e to [sqrt(2)/2, sqrt(2)]: above sqrt(2), log(1 + e) = ln2 + log(1 + f) with
    # f = (e - 1) / 2 in (-0.29, 0]; below, f = e itself (never 1 + e - 1: that loses small e).
    big = e > _f32(0.41421356)
    f = (e - _f32(1.0)) * _f32(0.5) if big else e
    # log(1 + f) = 2 atanh(s), s = f / (2 + f), |s| <= 0.172: the odd series to s^9 leaves a
    # relative error below 1e-8.
    s = f / (_f32(2.0) + f)
    z = s * s
    p = z * _f32(1.0 / 9.0) + _f32(1.0 / 7.0)
    p = p * z + _f32(1.0 / 5.0)
    p = p * z + _f32(1.0 / 3.0)
    p = p * z + _f32(1.0)
    return _f32(2.0) * s * p + (_f32(0.6931471805599453) if big else _f32(0.0))


@nb.njit(inline="always", **_JIT)
def _sigmoid_f32(x):
    y = _f32(1.0) / (_f32(1.0) + _exp_f32(-x))
    return x if x != x else y  # the clamp in _exp_f32 would turn NaN into a number


@nb.njit(**_JIT)
def _bias_sigmoid_forward_f32(A, b):
    B, O = A.shape  # A (B, O), b (O,)
    for r in range(B):
        for j in range(O):
            A[r, j] = _sigmoid_f32(A[r, j] + b[j])


@nb.njit(**_JIT)
def _bias_sigmoid_forward_f64(A, b):
    B, O = A.shape  # A (B, O), b (O,)
    for r in range(B):
        for j in range(O):
            A[r, j] = 1.0 / (1.0 + math.exp(-(A[r, j] + b[j])))


def bias_sigmoid_forward(A: np.ndarray, b: np.ndarray) -> None:
    """A <- sigma(A + b): the notes' z = sigma(a) after the GEMM a = z_prev W^T.  A (B, O), b (O,)."""
    if A.dtype == np.float32:
        _bias_sigmoid_forward_f32(A, b)
    else:
        _bias_sigmoid_forward_f64(A, b)


@nb.njit(inline="always", **_JIT)
def _output_unit_f32(a, t, flip, scale):
    """(D, loss term) of one output logit a (bias added) and target t, in float32."""
    s = t if not flip else _f32(1.0) - t
    # _exp_f32 clamps at -87 (exp(-87) = 1.6e-38, near the end of float32's normal range): take
    # the limit 0 below it, so that a certain, right answer gives a delta of exactly 0.
    x = -abs(a)
    e = _exp_f32(x) if x > _f32(-87.0) else _f32(0.0)
    sig = (_f32(1.0) if a >= _f32(0.0) else e) / (_f32(1.0) + e)
    sig = a if a != a else sig  # NaN stays NaN (the clamp would not)
    term = max(a, _f32(0.0)) + _log1p_f32(e) - s * a  # softplus(a) - s a
    return scale * (sig - s), term


_LANES = 16  # float64 partial sums of a reduction, so that LLVM vectorizes it without reassoc


@nb.njit(**_JIT)
def _output_loss_delta_f32_column(A, b, T, flip, scale64, D, db, loss):
    # One output unit (binary classification), A, T, D (B, 1) C-contiguous: 16 rows at a time, one
    # float64 lane each for the loss and for the column sum of D, so that the element math
    # vectorizes across rows (a plain running sum would serialize the loop without reassoc).
    B = A.shape[0]
    scale = _f32(scale64)  # D in float32 as the spec's; the loss keeps the float64 scale
    a_, t_, d_ = A.reshape(B), T.reshape(B), D.reshape(B)  # (B,) views
    total = np.zeros(_LANES)
    col = np.zeros(_LANES)
    b0 = b[0]
    for r0 in range(0, B - B % _LANES, _LANES):
        for k in range(_LANES):
            d, term = _output_unit_f32(a_[r0 + k] + b0, t_[r0 + k], flip, scale)
            d_[r0 + k] = d
            total[k] += term
            col[k] += d
    for r in range(B - B % _LANES, B):
        d, term = _output_unit_f32(a_[r] + b0, t_[r], flip, scale)
        d_[r] = d
        total[0] += term
        col[0] += d
    db[0] = col.sum()
    S = total.sum()
    loss[0] = scale64 * S
    loss[1] += S


@nb.njit(**_JIT)
def _output_loss_delta_f32(A, b, T, flip, scale64, D, db, loss):
    # Any O: vectorize across the columns of a row; one float64 sum per column.
    B, O = A.shape  # A, T, D (B, O); b, db (O,); loss (2,) float64
    scale = _f32(scale64)
    total = np.zeros(O)
    col = np.zeros(O)
    for r in range(B):
        for j in range(O):
            d, term = _output_unit_f32(A[r, j] + b[j], T[r, j], flip, scale)
            D[r, j] = d
            total[j] += term
            col[j] += d
    for j in range(O):
        db[j] = col[j]
    S = total.sum()
    loss[0] = scale64 * S
    loss[1] += S


@nb.njit(**_JIT)
def _output_loss_delta(A, b, T, positive_class, scale, D, db, loss):
    B, O = A.shape  # A, T, D (B, O); b, db (O,); loss (2,) float64
    total = 0.0
    for j in range(O):
        col = 0.0
        for r in range(B):
            a = float(A[r, j]) + float(b[j])
            s = float(T[r, j]) if positive_class == 1 else 1.0 - float(T[r, j])
            e = math.exp(-abs(a))  # never overflows; both branches below use it
            total += max(a, 0.0) + math.log1p(e) - s * a  # softplus(a) - s a
            sig = 1.0 / (1.0 + e) if a >= 0.0 else e / (1.0 + e)
            d = scale * (sig - s)
            D[r, j] = d
            col += D[r, j]  # the stored (rounded) value, so db is exactly the sum of D
        db[j] = col
    loss[0] = scale * total
    loss[1] += total


def output_loss_delta(
    A: np.ndarray,
    b: np.ndarray,
    T: np.ndarray,
    positive_class: int,
    scale: float,
    D: np.ndarray,
    db: np.ndarray,
    loss: np.ndarray,
) -> None:
    """The output layer in one pass, from the GEMM output A = z_{L-1} W^T (before the bias).

    With a = A + b, s = t (positive_class=1) or s = 1 - t (positive_class=0, the notes) and
    S = sum(softplus(a) - s a), unscaled: D <- scale * (sigma(a) - s);  db <- column sums of D;
    loss[0] <- scale * S;  loss[1] += S (a running sum, see ``bp_gpu.steps_numpy``).
    A, T, D (B, O); b, db (O,); loss (2,) float64. A is left as it was.
    """
    if loss.shape != (2,) or loss.dtype != np.float64:  # the compiled steps do not check bounds
        raise ValueError(f"output_loss_delta: loss must be a (2,) float64 array; got {loss.dtype}{loss.shape}")
    if A.dtype == np.float32:
        column = (A.shape[1] == 1 and A.flags.c_contiguous and T.flags.c_contiguous
                  and D.flags.c_contiguous)
        kernel = _output_loss_delta_f32_column if column else _output_loss_delta_f32
        kernel(A, b, T, positive_class != 1, float(scale), D, db, loss)
    else:
        _output_loss_delta(A, b, T, int(positive_class), float(scale), D, db, loss)


@nb.njit(**_JIT)
def _sigmoid_delta_backward(G, Z, db):
    B, O = G.shape  # G, Z (B, O); db (O,)
    # Column sums accumulated row after row in db itself: the order (and precision) of NumPy's
    # G.sum(axis=0), and no scratch buffer.
    for j in range(O):
        db[j] = 0
    for r in range(B):
        for j in range(O):
            z = Z[r, j]
            g = G[r, j] * (z - z * z)  # z (1 - z), no int literal (it would promote to float64)
            G[r, j] = g
            db[j] += g


def sigmoid_delta_backward(G: np.ndarray, Z: np.ndarray, db: np.ndarray) -> None:
    """G <- G * Z * (1 - Z), the notes' delta^(l-1) = (delta^(l) W) * sigma'(a^(l-1)); db <- column
    sums of the new G (the notes' dL/dw_i0 = delta_i).  G, Z (B, O); db (O,)."""
    _sigmoid_delta_backward(G, Z, db)


@nb.njit(**_JIT)
def _outer_sigmoid_delta_backward(D, W, Z, G, db):
    B, O = G.shape  # D (B, 1); W (1, O); G, Z (B, O); db (O,)
    for j in range(O):
        db[j] = 0
    for r in range(B):
        d = D[r, 0]
        for j in range(O):
            z = Z[r, j]
            g = d * W[0, j] * (z - z * z)  # (delta w) first, as the spec's G = D W
            G[r, j] = g
            db[j] += g


def outer_sigmoid_delta_backward(
    D: np.ndarray, W: np.ndarray, Z: np.ndarray, G: np.ndarray, db: np.ndarray
) -> None:
    """G <- (D W) * Z * (1 - Z); db <- column sums of G: the backward step below a layer of one
    unit, where sum_j delta_j w_ji is an outer product.  D (B, 1), W (1, O), Z, G (B, O), db (O,).

    The same as ``numpy.multiply(D, W, out=G)`` then ``sigmoid_delta_backward(G, Z, db)`` (what
    the engine runs on a backend without this step), in one pass instead of two: NumPy's
    broadcast multiply alone took 14 us of a 230 us ``[28, 64, 64, 1]`` batch.
    """
    _outer_sigmoid_delta_backward(D, W, Z, G, db)


@nb.njit(**_JIT)
def _take_rows(a, idx, out):
    n, C = a.shape  # a (n, C); idx (B,); out (B, C)
    for r in range(idx.shape[0]):
        i = idx[r]
        if i < 0 or i >= n:
            raise IndexError("take_rows: a row index is outside the array")
        for c in range(C):
            out[r, c] = a[i, c]


def take_rows(a: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    """out <- a[idx] (a batch gathered from the training data).  a (n, C), idx (B,), out (B, C).

    ``numpy.take(a, idx, axis=0, out=out)`` without its costs on a batch of short rows: it copies
    each row with a ``memmove`` call (12 us for 1024 rows of 28 float32) and, with index checking,
    gathers into a temporary first. Raises IndexError for an index outside ``0..n-1``.
    """
    if out.shape != (idx.shape[0], a.shape[1]) or out.dtype != a.dtype:
        raise ValueError(f"take_rows: out is {out.dtype}{out.shape}, needs {a.dtype}"
                         f"{(idx.shape[0], a.shape[1])}")
    _take_rows(a, idx, out)


# -- mixed precision: the rounded copies (bp_gpu.precision; docs/math.md, "Mixed precision") -------
# The CPU backend emulates the contract: each step that writes a GEMM operand also writes its rounded
# copy R (float32 values representable in the format), and the GEMMs multiply the copies in float32
# with BLAS. ``fmt`` is bp_gpu.precision's BF16 or TF32; the rounding is the integer arithmetic of
# bp_gpu.precision.round_bf16 / round_tf32 on the float's bits.

_u32 = np.uint32


@nb.njit(inline="always", **_JIT)
def _dropped(fmt):
    """Mantissa bits a format drops from a float32: 16 for bfloat16 (fmt 1), 13 for TF32 (fmt 2)."""
    return _u32(16) if fmt == 1 else _u32(13)


@nb.njit(inline="always", **_JIT)
def _rounded(x, dropped):
    """x (float32) rounded to nearest, ties to even, keeping 23 - dropped mantissa bits; NaN stays NaN."""
    # Every intermediate cast back to uint32 (Numba widens uint32 arithmetic to 64 bits), and one
    # definition of the result (Numba refuses .view of a variable assigned in two branches).
    u = _f32(x).view(np.uint32)
    nan = (u & _u32(0x7FFFFFFF)) > _u32(0x7F800000)
    # A NaN keeps its bits, made quiet: a payload in the dropped bits alone would round to inf.
    quiet = _u32(0x00400000) if nan else _u32(0)
    half = _u32(_u32(_u32(1) << _u32(dropped - _u32(1))) - _u32(1))  # half an ulp, less one
    bias = _u32(0) if nan else _u32(half + _u32((u >> dropped) & _u32(1)))
    r = _u32(_u32(_u32(u | quiet) + bias) & _u32(_u32(0xFFFFFFFF) << dropped))
    return r.view(np.float32)


@nb.njit(**_JIT)
def _round_rows(A, R, fmt):
    B, O = A.shape  # A (B, O); R (B, ld >= O)
    k = _dropped(fmt)
    for r in range(B):
        for j in range(O):
            R[r, j] = _rounded(A[r, j], k)


def round_rows(A: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """R[:, :O] <- r(A), the rounded copy of a float32 operand.  A (B, O); R (B, ld >= O)."""
    _round_rows(A, R, fmt)


@nb.njit(**_JIT)
def _take_rows_round(X, idx, R, fmt):
    n, C = X.shape  # X (n, C); idx (B,); R (B, ld >= C)
    k = _dropped(fmt)
    for r in range(idx.shape[0]):
        i = idx[r]
        if i < 0 or i >= n:
            raise IndexError("take_rows_round: a row index is outside the array")
        for c in range(C):
            R[r, c] = _rounded(X[i, c], k)


def take_rows_round(X: np.ndarray, idx: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """R[:, :C] <- r(X[idx]): a batch gathered and rounded in one pass.  X (n, C), idx (B,), R (B, ld >= C)."""
    _take_rows_round(X, idx, R, fmt)


@nb.njit(**_JIT)
def _bias_sigmoid_forward_round(A, b, R, fmt):
    B, O = A.shape  # A (B, O), b (O,), R (B, ld >= O)
    k = _dropped(fmt)
    for r in range(B):
        for j in range(O):
            z = _sigmoid_f32(A[r, j] + b[j])
            A[r, j] = z
            R[r, j] = _rounded(z, k)


def bias_sigmoid_forward_round(A: np.ndarray, b: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """A <- sigma(A + b); R[:, :O] <- r(A).  A (B, O), b (O,), R (B, ld >= O)."""
    _bias_sigmoid_forward_round(A, b, R, fmt)


def output_loss_delta_round(A: np.ndarray, b: np.ndarray, T: np.ndarray, positive_class: int, scale: float,
                            D: np.ndarray, db: np.ndarray, loss: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """``output_loss_delta``, then R[:, :O] <- r(D) (a second pass over the (B, O) output: narrow)."""
    output_loss_delta(A, b, T, positive_class, scale, D, db, loss)
    _round_rows(D, R, fmt)


@nb.njit(**_JIT)
def _sigmoid_delta_backward_round(G, Z, db, R, fmt):
    B, O = G.shape  # G, Z (B, O); db (O,); R (B, ld >= O)
    k = _dropped(fmt)
    for j in range(O):
        db[j] = 0
    for r in range(B):
        for j in range(O):
            z = Z[r, j]
            g = G[r, j] * (z - z * z)
            G[r, j] = g
            R[r, j] = _rounded(g, k)
            db[j] += g


def sigmoid_delta_backward_round(G: np.ndarray, Z: np.ndarray, db: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """G <- G Z (1 - Z); db <- column sums of G; R[:, :O] <- r(G).  G, Z (B, O), db (O,), R (B, ld >= O)."""
    _sigmoid_delta_backward_round(G, Z, db, R, fmt)


@nb.njit(**_JIT)
def _outer_sigmoid_delta_backward_round(D, W, Z, G, db, R, copy, fmt):
    B, O = G.shape  # D (B, 1); W (1, O); G, Z (B, O); db (O,); R (B, ld >= O) when copy
    k = _dropped(fmt)
    for j in range(O):
        db[j] = 0
    for r in range(B):
        d = _rounded(D[r, 0], k)
        for j in range(O):
            z = Z[r, j]
            g = d * _rounded(W[0, j], k) * (z - z * z)  # r(delta) r(w): exact in float32
            G[r, j] = g
            if copy:
                R[r, j] = _rounded(g, k)
            db[j] += g


def outer_sigmoid_delta_backward_round(D: np.ndarray, W: np.ndarray, Z: np.ndarray, G: np.ndarray, db: np.ndarray,
                                       R: np.ndarray | None, fmt: int) -> None:
    """G <- (r(D) r(W)) Z (1 - Z); db <- column sums of G; R[:, :O] <- r(G) unless R is None.
    D (B, 1), W (1, O), Z, G (B, O), db (O,), R (B, ld >= O) or None."""
    _outer_sigmoid_delta_backward_round(D, W, Z, G, db, G if R is None else R, R is not None, fmt)
