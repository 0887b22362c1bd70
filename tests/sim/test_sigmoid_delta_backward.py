"""sigmoid_delta_backward kernel (delta times sigma', bias-gradient column sums in the same launch)."""

import numpy as np
import pytest
from bp_gpu.kernels import _launch
from bp_gpu.kernels.sigmoid_delta_backward import prepare_sigmoid_delta_backward, sigmoid_delta_backward

from bp_gpu import steps_numpy as ref

# Simulated grids are at most 4 blocks of 32 threads: (257, 10) runs 2 x 2 blocks with 4-row
# batches and ragged tails; (33, 3) 1 x 4 blocks; (1, 1) one block; (9, 37) strides over columns.
SHAPES = [(1, 1), (7, 5), (33, 3), (257, 10), (9, 37)]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def _run(step, G, Z):
    G = G.copy()
    db = np.full(G.shape[1], np.nan, dtype=G.dtype)
    step(G, Z, db)
    return G, db


def _inputs(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype), rng.random(shape).astype(dtype)


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, dtype, rng):
    G, Z = _inputs(rng, shape, dtype)
    G0, db0 = _run(ref.sigmoid_delta_backward, G, Z)
    G1, db1 = _run(sigmoid_delta_backward, G, Z)
    np.testing.assert_allclose(G1, G0, **TOL[dtype])
    np.testing.assert_allclose(db1, db0, **TOL[dtype])
    assert _launch.reduction_workspace(0)[0] == 0  # the last block reset the ticket


@pytest.mark.sim
@pytest.mark.parametrize("shape", [(257, 10), (33, 3)])
def test_any_block_may_finish_last(shape, block_order, rng):
    # The partials are summed in their own order, not the blocks': bit-identical whichever block
    # draws the last ticket.
    G, Z = _inputs(rng, shape, np.float64)
    first = _run(sigmoid_delta_backward, G, Z)
    again = _run(sigmoid_delta_backward, G, Z)
    G0, db0 = _run(ref.sigmoid_delta_backward, G, Z)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(first[1], db0, **TOL[np.float64])
    assert _launch.reduction_workspace(0)[0] == 0


@pytest.mark.sim
def test_prepared_launch_reads_the_arrays_at_each_call(rng):
    G, Z = _inputs(rng, (33, 3), np.float64)
    db = np.empty(3)
    ours, want = G.copy(), G.copy()
    launch = prepare_sigmoid_delta_backward(ours, Z, db)
    want_db = np.empty(3)
    for _ in range(2):  # in place: the second call works on the first call's output
        launch()
        ref.sigmoid_delta_backward(want, Z, want_db)
        np.testing.assert_allclose(ours, want, **TOL[np.float64])
        np.testing.assert_allclose(db, want_db, **TOL[np.float64])


@pytest.mark.sim
def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"sigmoid_delta_backward: Z must have shape \(4, 3\)"):
        sigmoid_delta_backward(np.zeros((4, 3)), np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match=r"db must have shape \(3,\)"):
        sigmoid_delta_backward(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="db must be contiguous"):
        sigmoid_delta_backward(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros(6)[::2])


@pytest.mark.sim
@pytest.mark.parametrize("shape", [(1, 1), (33, 3), (257, 10)])
def test_bf16_variant_writes_the_plain_outputs_and_the_bfloat16_bits_of_the_delta(shape, rng):
    from bp_gpu.kernels.sigmoid_delta_backward import sigmoid_delta_backward_round

    from bp_gpu.precision import BF16, bf16_bits

    G, Z = _inputs(rng, shape, np.float32)
    want, db = _run(sigmoid_delta_backward, G, Z)
    R = np.full((shape[0], shape[1] + 7), 0xDEAD, dtype=np.uint16)
    got, db2 = _run(lambda g, z, d: sigmoid_delta_backward_round(g, z, d, R, BF16), G, Z)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(db2, db)
    np.testing.assert_array_equal(R[:, : shape[1]], bf16_bits(want))
    assert (R[:, shape[1] :] == 0xDEAD).all()
