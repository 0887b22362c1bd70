"""output_loss_delta kernel (delta, bias gradient, loss in one pass) vs its NumPy reference."""

import numpy as np
import pytest
from bp_gpu.kernels.output_loss_delta import output_loss_delta

from bp_gpu import steps_numpy as ref

# (257, 10) spreads over several blocks (two-stage reduction); (1, 1) is one block (one stage);
# (9, 37) needs the column grid-stride loop.
SHAPES = [(1, 1), (7, 5), (33, 3), (257, 10), (9, 37)]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-15)}
LOSS_RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _run(step, A, b, T, positive_class, scale):
    D = np.full_like(A, np.nan)
    db = np.full(A.shape[1], np.nan, dtype=A.dtype)
    loss = np.array([np.nan, 0.5])  # [scaled loss, running sum it adds to]
    A_in = A.copy()
    step(A_in, b, T, positive_class, scale, D, db, loss)
    np.testing.assert_array_equal(A_in, A)  # A is left as it was
    return D, db, loss


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("positive_class", [0, 1])
def test_matches_reference(shape, dtype, positive_class, rng):
    A = (rng.standard_normal(shape) * 3).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    T = (rng.random(shape) < 0.5).astype(dtype)
    scale = 1.0 / shape[0]
    D0, db0, loss0 = _run(ref.output_loss_delta, A, b, T, positive_class, scale)
    D1, db1, loss1 = _run(output_loss_delta, A, b, T, positive_class, scale)
    np.testing.assert_allclose(D1, D0, **TOL[dtype])
    np.testing.assert_allclose(db1, db0, **TOL[dtype])
    np.testing.assert_allclose(loss1, loss0, rtol=LOSS_RTOL[dtype])


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_for_huge_logits(dtype):
    a = np.array([[1e4], [-1e4], [np.finfo(dtype).max / 4], [-3e4]], dtype=dtype)  # (4, 1)
    T = np.array([[0], [1], [0], [0]], dtype=dtype)
    b = np.zeros(1, dtype=dtype)
    D, db, loss = _run(output_loss_delta, a, b, T, 1, 1.0)
    assert np.isfinite(D).all() and np.isfinite(db).all() and np.isfinite(loss).all()
    np.testing.assert_array_equal(D[:, 0], [1.0, -1.0, 1.0, 0.0])
    # softplus(a) - t a: 1e4 + 1e4 + big + 0 (each term exact to float64 rounding)
    np.testing.assert_allclose(loss[0], 2e4 + float(a[2, 0]), rtol=1e-12)


@pytest.mark.sim
def test_rejects_bad_arguments():
    A = np.zeros((3, 2))
    ok = dict(b=np.zeros(2), T=np.zeros((3, 2)), D=np.zeros((3, 2)), db=np.zeros(2), loss=np.zeros(2))

    def call(**kw):
        a = {**ok, **kw}
        output_loss_delta(A, a["b"], a["T"], kw.get("pc", 1), 1.0, a["D"], a["db"], a["loss"])

    with pytest.raises(ValueError, match=r"T must have shape \(3, 2\)"):
        call(T=np.zeros((2, 3)))
    with pytest.raises(TypeError, match="loss must be float64"):
        call(loss=np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match="positive_class must be 0 or 1"):
        call(pc=2)
