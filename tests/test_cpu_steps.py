"""The CPU backend's Numba steps (``bp_gpu.cpu_steps``) against the NumPy spec (``steps_numpy``).

Ragged shapes (1, primes, non-multiples of a 16-lane vector), float32 and float64, explicit
tolerances: float32 allows a few ulps (the vectorized exp, a different operation order), float64
allows rounding only. Extreme logits must stay finite and reach the right limits.
"""

import numpy as np
import pytest

from bp_gpu import cpu_steps as C
from bp_gpu import steps_numpy as S

SHAPES = [(1, 1), (7, 33), (257, 129), (1024, 17)]
DTYPES = [np.float32, np.float64]
# (rtol, atol) per dtype: values are O(1) probabilities, deltas and their sums over <= 1024 rows.
TOL = {np.float32: (2e-6, 2e-6), np.float64: (1e-13, 1e-14)}
RUNNING = 0.625  # loss[1] before an output step, which adds the step's unscaled loss sum to it


def _close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_sigmoid_forward_matches_spec(rng, shape, dtype):
    A = (rng.standard_normal(shape) * 6).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    ours, spec = A.copy(), A.copy()
    C.bias_sigmoid_forward(ours, b)
    S.bias_sigmoid_forward(spec, b)
    assert ours.dtype == dtype
    _close(ours, spec, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_sigmoid_forward_extreme_logits(dtype):
    A = np.array([[-1e4, -100.0, -88.0, -20.0, 0.0, 20.0, 88.0, 100.0, 1e4]], dtype=dtype)
    C.bias_sigmoid_forward(A, np.zeros(A.shape[1], dtype=dtype))
    assert np.all(np.isfinite(A))
    assert np.all((A >= 0) & (A <= 1))
    assert A[0, 4] == 0.5 and A[0, -1] == 1.0 and A[0, 0] < 1e-37
    np.testing.assert_allclose(A[0, 3], 1 / (1 + np.exp(20.0)), rtol=1e-6)  # relative, not absolute
    assert np.all(np.diff(A[0]) >= 0)  # monotone through the clamp


def test_bias_sigmoid_forward_float32_relative_accuracy(rng):
    # Over the whole range where sigma is a normal float32, relative error about one ulp: the
    # vectorized exp is not a rough approximation.
    A = np.linspace(-87, 30, 100_003).astype(np.float32)[None, :]
    exact = 1 / (1 + np.exp(-A.astype(np.float64)))
    C.bias_sigmoid_forward(A, np.zeros(A.shape[1], dtype=np.float32))
    assert np.max(np.abs(A - exact) / exact) < 4e-7


def test_bias_sigmoid_forward_propagates_nan():
    A = np.array([[np.nan, 1.0]], dtype=np.float32)
    C.bias_sigmoid_forward(A, np.zeros(2, dtype=np.float32))
    assert np.isnan(A[0, 0]) and np.isfinite(A[0, 1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("positive_class", [0, 1])
def test_output_loss_delta_matches_spec(rng, shape, dtype, positive_class):
    B, O = shape
    A = (rng.standard_normal(shape) * 4).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    T = (rng.random(shape) < 0.5).astype(dtype)
    outs = []
    for steps in (C, S):
        D, db, loss = np.full(shape, 7, dtype), np.full(O, 7, dtype), np.array([7.0, RUNNING])
        A_in = A.copy()
        steps.output_loss_delta(A_in, b, T, positive_class, 1.0 / B, D, db, loss)
        np.testing.assert_array_equal(A_in, A)  # A is left as it was
        outs.append((D, db, loss))
    (D, db, loss), (D_s, db_s, loss_s) = outs
    _close(D, D_s, dtype)
    _close(db, db_s, dtype)
    np.testing.assert_allclose(loss, loss_s, rtol=TOL[dtype][0] * 5)
    np.testing.assert_allclose(loss[0], (loss[1] - RUNNING) / B, rtol=1e-12)  # [0] = scale S, [1] += S


# One output unit: the float32 step runs 16 rows per vector lane, then a scalar tail; B covers no
# full lane group, exact groups, and groups plus a tail. Strided (non-contiguous) arrays take the
# any-O loop instead.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 15, 16, 17, 1031])
@pytest.mark.parametrize("positive_class", [0, 1])
@pytest.mark.parametrize("contiguous", [True, False])
def test_output_loss_delta_one_unit_matches_spec(rng, dtype, B, positive_class, contiguous):
    wide = (rng.standard_normal((B, 2)) * 4).astype(dtype)
    A = np.ascontiguousarray(wide[:, :1]) if contiguous else wide[:, :1]
    T = (rng.random((B, 1)) < 0.5).astype(dtype)
    b = rng.standard_normal(1).astype(dtype)
    outs = []
    for steps in (C, S):
        D = np.full((B, 1), 7, dtype) if contiguous else np.full((B, 3), 7, dtype)[:, 1:2]
        db, loss = np.full(1, 7, dtype), np.array([7.0, RUNNING])
        steps.output_loss_delta(A, b, T, positive_class, 1.0 / B, D, db, loss)
        outs.append((D, db, loss))
    (D, db, loss), (D_s, db_s, loss_s) = outs
    _close(D, D_s, dtype)
    _close(db, db_s, dtype)
    np.testing.assert_allclose(loss, loss_s, rtol=TOL[dtype][0] * 5)
    np.testing.assert_allclose(loss[0], (loss[1] - RUNNING) / B, rtol=1e-12)  # [0] = scale S, [1] += S


def test_output_loss_delta_float32_loss_accuracy():
    # The float32 softplus (vectorized exp and log1p) over the whole logit range, summed in
    # float64: the loss of each single row against float64 math, relative error ~ float32 rounding.
    a = np.concatenate([np.linspace(-100, 100, 20_001), [-1e-6, 1e-6, 0.0]]).astype(np.float32)
    B = a.size
    A, T = a[:, None].copy(), np.zeros((B, 1), np.float32)
    D, db, loss = np.empty((B, 1), np.float32), np.empty(1, np.float32), np.zeros(2)
    for r in range(0, B, 97):  # one row at a time: the term itself, not an average of errors
        C.output_loss_delta(A[r : r + 1], np.zeros(1, np.float32), T[r : r + 1], 1, 1.0,
                            D[r : r + 1], db, loss)
        x = float(a[r])
        exact = max(x, 0.0) + np.log1p(np.exp(-abs(x)))
        # Below a = -87 (exp(-87) = 1.6e-38, the end of float32's normal range) the term is 0.
        assert abs(loss[0] - exact) <= 3e-7 * exact + 1.7e-38, (x, loss[0], exact)
    C.output_loss_delta(A, np.zeros(1, np.float32), T, 1, 1.0, D, db, loss)
    a64 = a.astype(np.float64)
    exact_sum = float(np.sum(np.maximum(a64, 0) + np.log1p(np.exp(-np.abs(a64)))))
    np.testing.assert_allclose(loss[0], exact_sum, rtol=3e-7)
    np.testing.assert_allclose(D[:, 0], 1 / (1 + np.exp(-a64)), rtol=4e-7, atol=1.7e-38)


def test_output_loss_delta_propagates_nan():
    A = np.array([[np.nan], [1.0]], dtype=np.float32)
    D, db, loss = np.zeros((2, 1), np.float32), np.zeros(1, np.float32), np.zeros(2)
    C.output_loss_delta(A, np.zeros(1, np.float32), np.ones((2, 1), np.float32), 1, 0.5, D, db, loss)
    assert np.isnan(D[0, 0]) and np.isfinite(D[1, 0]) and np.isnan(loss).all() and np.isnan(db[0])


def test_output_loss_delta_rejects_a_loss_buffer_without_the_running_sum():
    A = np.zeros((3, 1))
    with pytest.raises(ValueError, match=r"output_loss_delta: loss must be a \(2,\) float64 array"):
        C.output_loss_delta(A, np.zeros(1), A, 1, 1.0, np.zeros((3, 1)), np.zeros(1), np.zeros(1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_loss_delta_extreme_logits(dtype):
    A = np.array([[-1e4], [1e4], [-1e4], [1e4]], dtype=dtype)
    T = np.array([[0], [1], [1], [0]], dtype=dtype)  # two right with certainty, two wrong
    D, db, loss = np.zeros((4, 1), dtype), np.zeros(1, dtype), np.zeros(2)
    C.output_loss_delta(A, np.zeros(1, dtype), T, 1, 1.0, D, db, loss)
    assert np.all(np.isfinite(D)) and np.isfinite(loss[0])
    np.testing.assert_array_equal(D[:, 0], np.array([0, 0, -1, 1], dtype=dtype))
    np.testing.assert_allclose(loss, [2e4, 2e4], rtol=1e-12)  # softplus(1e4) = 1e4, twice


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid_delta_backward_matches_spec(rng, shape, dtype):
    G = rng.standard_normal(shape).astype(dtype)
    Z = rng.random(shape).astype(dtype)
    Z[0, 0] = 0.0  # saturated units must give exactly zero gradient
    Z[-1, -1] = 1.0
    ours, spec = G.copy(), G.copy()
    db, db_s = np.full(shape[1], 7, dtype), np.full(shape[1], 7, dtype)
    C.sigmoid_delta_backward(ours, Z, db)
    S.sigmoid_delta_backward(spec, Z, db_s)
    _close(ours, spec, dtype)
    _close(db, db_s, dtype, scale=np.sqrt(shape[0]))
    assert ours[0, 0] == 0 and ours[-1, -1] == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,O", [(1, 1), (7, 33), (257, 129), (1024, 17)])
def test_outer_sigmoid_delta_backward_matches_spec(rng, dtype, B, O):
    D = rng.standard_normal((B, 1)).astype(dtype)
    W = rng.standard_normal((1, O)).astype(dtype)
    Z = rng.random((B, O)).astype(dtype)
    Z[0, 0] = 1.0  # a saturated unit gives exactly zero gradient
    G, db = np.full((B, O), 7, dtype), np.full(O, 7, dtype)
    C.outer_sigmoid_delta_backward(D, W, Z, G, db)
    G_s, db_s = np.full((B, O), 7, dtype), np.full(O, 7, dtype)
    S.outer_sigmoid_delta_backward(D, W, Z, G_s, db_s)  # multiply, then sigmoid_delta_backward
    _close(G, G_s, dtype)
    _close(db, db_s, dtype, scale=np.sqrt(B))
    assert G[0, 0] == 0 and G.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,width,B", [(1, 1, 1), (7, 28, 5), (257, 1, 300), (1031, 33, 17)])
def test_take_rows_matches_numpy_take(rng, dtype, n, width, B):
    a = rng.standard_normal((n, width)).astype(dtype)
    idx = rng.integers(0, n, B)  # repeats allowed
    out = np.full((B, width), 7, dtype)
    C.take_rows(a, idx, out)
    np.testing.assert_array_equal(out, np.take(a, idx, axis=0))


def test_take_rows_rejects_bad_indices_and_outputs():
    a = np.zeros((5, 3), np.float32)
    with pytest.raises(IndexError, match="outside"):
        C.take_rows(a, np.array([0, 5]), np.empty((2, 3), np.float32))
    with pytest.raises(IndexError, match="outside"):
        C.take_rows(a, np.array([-1]), np.empty((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"out is float32\(2, 2\), needs float32\(2, 3\)"):
        C.take_rows(a, np.array([0, 1]), np.empty((2, 2), np.float32))
    with pytest.raises(ValueError, match="out is float64"):
        C.take_rows(a, np.array([0, 1]), np.empty((2, 3), np.float64))


# -- the steps that also write the rounded copy of their output (mixed precision) ----------------
ROUND_SHAPES = [(1, 1), (7, 33), (257, 10)]
FMTS = [1, 2]  # bp_gpu.precision.BF16, TF32


def _padded(B, O, pad=3):
    """A copy buffer (B, O + pad) filled with a marker, so a write past column O shows."""
    return np.full((B, O + pad), -7.0, dtype=np.float32)


def _copy_is_rounded(R, values, fmt):
    from bp_gpu.precision import round_to

    O = values.shape[1]
    np.testing.assert_array_equal(R[:, :O], round_to(values, fmt))
    assert (R[:, O:] == -7.0).all()  # the padding is left alone


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("shape", ROUND_SHAPES)
def test_round_steps_match_spec_and_copy_their_own_output(rng, shape, fmt):
    B, O = shape
    A = (rng.standard_normal(shape) * 6).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    ours, spec, R, Rs = A.copy(), A.copy(), _padded(B, O), _padded(B, O)
    C.bias_sigmoid_forward_round(ours, b, R, fmt)
    S.bias_sigmoid_forward_round(spec, b, Rs, fmt)
    _close(ours, spec, np.float32)
    _copy_is_rounded(R, ours, fmt)

    T = (rng.random(shape) < 0.5).astype(np.float32)
    D, Ds = np.empty(shape, np.float32), np.empty(shape, np.float32)
    db, dbs = np.empty(O, np.float32), np.empty(O, np.float32)
    loss, losss = np.array([0.0, RUNNING]), np.array([0.0, RUNNING])
    R, Rs = _padded(B, O), _padded(B, O)
    C.output_loss_delta_round(A, b, T, 1, 1 / B, D, db, loss, R, fmt)
    S.output_loss_delta_round(A, b, T, 1, 1 / B, Ds, dbs, losss, Rs, fmt)
    _close(D, Ds, np.float32)
    _close(db, dbs, np.float32)
    _copy_is_rounded(R, D, fmt)

    G, Z = rng.standard_normal(shape).astype(np.float32), rng.random(shape).astype(np.float32)
    ours, spec, R, Rs = G.copy(), G.copy(), _padded(B, O), _padded(B, O)
    C.sigmoid_delta_backward_round(ours, Z, db, R, fmt)
    S.sigmoid_delta_backward_round(spec, Z, dbs, Rs, fmt)
    _close(ours, spec, np.float32)
    _close(db, dbs, np.float32, scale=B)
    _copy_is_rounded(R, ours, fmt)

    Dcol, W = rng.standard_normal((B, 1)).astype(np.float32), rng.standard_normal((1, O)).astype(np.float32)
    for copy in (True, False):
        R, Rs = (_padded(B, O), _padded(B, O)) if copy else (None, None)
        ours, spec = np.empty(shape, np.float32), np.empty(shape, np.float32)
        C.outer_sigmoid_delta_backward_round(Dcol, W, Z, ours, db, R, fmt)
        S.outer_sigmoid_delta_backward_round(Dcol, W, Z, spec, dbs, Rs, fmt)
        _close(ours, spec, np.float32)
        _close(db, dbs, np.float32, scale=B)
        if copy:
            _copy_is_rounded(R, ours, fmt)


@pytest.mark.parametrize("fmt", FMTS)
def test_round_rows_and_take_rows_round_match_spec_exactly(rng, fmt):
    X = (rng.standard_normal((41, 13)) * 100).astype(np.float32)
    X[0, :3] = [np.nan, np.inf, -0.0]
    idx = rng.integers(0, 41, size=17)
    for fn, args in (("round_rows", (X,)), ("take_rows_round", (X, idx))):
        R = _padded(len(args[-1]) if fn == "take_rows_round" else 41, 13)
        Rs = R.copy()
        getattr(C, fn)(*args, R, fmt)
        getattr(S, fn)(*args, Rs, fmt)
        np.testing.assert_array_equal(R, Rs)
    with pytest.raises(IndexError, match="take_rows_round: a row index is outside the array"):
        C.take_rows_round(X, np.array([0, 41]), _padded(2, 13), fmt)
