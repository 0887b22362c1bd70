"""sigmoid_delta_backward kernel (delta times sigma', fused bias-gradient column sums)."""

import numpy as np
import pytest
from bp_gpu.kernels.sigmoid_delta_backward import sigmoid_delta_backward

from bp_gpu import steps_numpy as ref

# (257, 10) and (33, 3) use the two-stage reduction; (1, 1) one stage; (9, 37) column grid-stride.
SHAPES = [(1, 1), (7, 5), (33, 3), (257, 10), (9, 37)]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def _run(step, G, Z):
    G = G.copy()
    db = np.full(G.shape[1], np.nan, dtype=G.dtype)
    step(G, Z, db)
    return G, db


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, dtype, rng):
    G = rng.standard_normal(shape).astype(dtype)
    Z = rng.random(shape).astype(dtype)
    G0, db0 = _run(ref.sigmoid_delta_backward, G, Z)
    G1, db1 = _run(sigmoid_delta_backward, G, Z)
    np.testing.assert_allclose(G1, G0, **TOL[dtype])
    np.testing.assert_allclose(db1, db0, **TOL[dtype])


@pytest.mark.sim
def test_bit_identical_on_repeat(rng):
    G = rng.standard_normal((257, 10))
    Z = rng.random((257, 10))
    first = _run(sigmoid_delta_backward, G, Z)
    again = _run(sigmoid_delta_backward, G, Z)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)


@pytest.mark.sim
def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"sigmoid_delta_backward: Z must have shape \(4, 3\)"):
        sigmoid_delta_backward(np.zeros((4, 3)), np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match=r"db must have shape \(3,\)"):
        sigmoid_delta_backward(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros(4))
