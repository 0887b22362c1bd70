"""outer_sigmoid_delta_backward kernel ((D W) times sigma' and its column sums, one launch) vs its
NumPy reference, and the CPU backend's step of the same name."""

import numpy as np
import pytest
from bp_gpu.kernels import _launch
from bp_gpu.kernels.outer_sigmoid_delta_backward import (
    outer_sigmoid_delta_backward,
    prepare_outer_sigmoid_delta_backward,
)

from bp_gpu import cpu_steps
from bp_gpu import steps_numpy as ref

# Simulated grids are at most 4 blocks of 32 threads: (257, 10) runs 2 x 2 blocks with 4-row
# batches and ragged tails; (33, 3) 1 x 4 blocks; (1, 1) one block; (9, 37) strides over columns.
SHAPES = [(1, 1), (7, 5), (33, 3), (257, 10), (9, 37)]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def _inputs(rng, shape, dtype):
    B, O = shape
    D = rng.standard_normal((B, 1)).astype(dtype)
    W = rng.standard_normal((1, O)).astype(dtype)
    Z = rng.random(shape).astype(dtype)
    return D, W, Z


def _run(step, D, W, Z):
    G = np.full(Z.shape, np.nan, dtype=Z.dtype)
    db = np.full(Z.shape[1], np.nan, dtype=Z.dtype)
    step(D, W, Z, G, db)
    return G, db


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, dtype, rng):
    D, W, Z = _inputs(rng, shape, dtype)
    G0, db0 = _run(ref.outer_sigmoid_delta_backward, D, W, Z)
    G1, db1 = _run(outer_sigmoid_delta_backward, D, W, Z)
    np.testing.assert_allclose(G1, G0, **TOL[dtype])
    np.testing.assert_allclose(db1, db0, **TOL[dtype])
    # The same operation order as the reference's multiply-then-backward: G is exact in float64.
    if dtype == np.float64:
        np.testing.assert_array_equal(G1, G0)
    G2, db2 = _run(cpu_steps.outer_sigmoid_delta_backward, D, W, Z)
    np.testing.assert_allclose(G2, G0, **TOL[dtype])
    np.testing.assert_allclose(db2, db0, **TOL[dtype])
    assert _launch.reduction_workspace(0)[0] == 0  # the last block reset the ticket


@pytest.mark.sim
@pytest.mark.parametrize("shape", [(257, 10), (33, 3)])
def test_any_block_may_finish_last(shape, block_order, rng):
    D, W, Z = _inputs(rng, shape, np.float64)
    first = _run(outer_sigmoid_delta_backward, D, W, Z)
    again = _run(outer_sigmoid_delta_backward, D, W, Z)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(first[1], _run(ref.outer_sigmoid_delta_backward, D, W, Z)[1], **TOL[np.float64])
    assert _launch.reduction_workspace(0)[0] == 0


@pytest.mark.sim
def test_prepared_launch_reads_the_arrays_at_each_call(rng):
    D, W, Z = _inputs(rng, (33, 3), np.float64)
    G, db = np.empty(Z.shape), np.empty(3)
    launch = prepare_outer_sigmoid_delta_backward(D, W, Z, G, db)
    launch()
    D *= -2.0  # the next batch's delta, written into the same buffer
    launch()
    G0, db0 = _run(ref.outer_sigmoid_delta_backward, D, W, Z)
    np.testing.assert_allclose(G, G0, **TOL[np.float64])
    np.testing.assert_allclose(db, db0, **TOL[np.float64])


@pytest.mark.sim
def test_rejects_mismatched_shapes():
    Z = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"outer_sigmoid_delta_backward: D must have shape \(4, 1\)"):
        outer_sigmoid_delta_backward(np.zeros((4, 2)), np.zeros((1, 3)), Z, np.zeros((4, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"W must have shape \(1, 3\)"):
        outer_sigmoid_delta_backward(np.zeros((4, 1)), np.zeros((3, 1)), Z, np.zeros((4, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"G must have shape \(4, 3\)"):
        outer_sigmoid_delta_backward(np.zeros((4, 1)), np.zeros((1, 3)), Z, np.zeros((3, 4)), np.zeros(3))


@pytest.mark.sim
@pytest.mark.parametrize("fmt", [1, 2])  # bp_gpu.precision.BF16 (with the copy), TF32 (without)
@pytest.mark.parametrize("shape", [(1, 1), (33, 3), (257, 10)])
def test_rounded_variants_multiply_the_rounded_factors(shape, fmt, rng):
    from bp_gpu.kernels.outer_sigmoid_delta_backward import outer_sigmoid_delta_backward_round

    from bp_gpu.precision import BF16, bf16_bits, round_to

    D, W, Z = _inputs(rng, shape, np.float32)
    # The factors already rounded: the plain kernel then computes exactly what the variant must.
    want, db = _run(outer_sigmoid_delta_backward, round_to(D, fmt), round_to(W, fmt), Z)
    R = np.full((shape[0], shape[1] + 2), 0xDEAD, dtype=np.uint16) if fmt == BF16 else None
    got, db2 = _run(lambda *a: outer_sigmoid_delta_backward_round(*a, R, fmt), D, W, Z)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(db2, db)
    spec, _ = _run(lambda *a: ref.outer_sigmoid_delta_backward_round(*a, None, fmt), D, W, Z)
    np.testing.assert_allclose(got, spec, **TOL[np.float32])
    if R is not None:
        np.testing.assert_array_equal(R[:, : shape[1]], bf16_bits(got))
        assert (R[:, shape[1] :] == 0xDEAD).all()
    else:
        with pytest.raises(ValueError, match="needs the copy R"):
            outer_sigmoid_delta_backward_round(D, W, Z, got, db2, None, BF16)
