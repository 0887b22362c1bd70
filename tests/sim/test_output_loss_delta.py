"""output_loss_delta kernel (delta, bias gradient, loss and running loss sum in one launch) vs its
NumPy reference."""

import numpy as np
import pytest
from bp_gpu.kernels import _launch
from bp_gpu.kernels.output_loss_delta import output_loss_delta, prepare_output_loss_delta

from bp_gpu import steps_numpy as ref

# Simulated grids are at most 4 blocks of 32 threads: (257, 10) runs 2 x 2 blocks with 4-row
# batches and ragged tails; (33, 3) 1 x 4 blocks; (1, 1) one block; (9, 37) strides over columns.
SHAPES = [(1, 1), (7, 5), (33, 3), (257, 10), (9, 37)]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-15)}
LOSS_RTOL = {np.float32: 1e-5, np.float64: 1e-12}
RUNNING = 0.625  # loss[1] before the step: the step adds to it


def _run(step, A, b, T, positive_class, scale):
    D = np.full_like(A, np.nan)
    db = np.full(A.shape[1], np.nan, dtype=A.dtype)
    loss = np.array([np.nan, RUNNING])
    A_in = A.copy()
    step(A_in, b, T, positive_class, scale, D, db, loss)
    np.testing.assert_array_equal(A_in, A)  # A is left as it was
    return D, db, loss


def _inputs(rng, shape, dtype):
    A = (rng.standard_normal(shape) * 3).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    T = (rng.random(shape) < 0.5).astype(dtype)
    return A, b, T


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("positive_class", [0, 1])
def test_matches_reference(shape, dtype, positive_class, rng):
    A, b, T = _inputs(rng, shape, dtype)
    scale = 1.0 / shape[0]
    D0, db0, loss0 = _run(ref.output_loss_delta, A, b, T, positive_class, scale)
    D1, db1, loss1 = _run(output_loss_delta, A, b, T, positive_class, scale)
    np.testing.assert_allclose(D1, D0, **TOL[dtype])
    np.testing.assert_allclose(db1, db0, **TOL[dtype])
    np.testing.assert_allclose(loss1, loss0, rtol=LOSS_RTOL[dtype])
    # loss[1] - RUNNING is the unscaled sum S, loss[0] = scale S
    np.testing.assert_allclose(loss1[0], scale * (loss1[1] - RUNNING), rtol=1e-12)
    assert _launch.reduction_workspace(0)[0] == 0  # the last block reset the ticket


@pytest.mark.sim
@pytest.mark.parametrize("shape", [(257, 10), (33, 3)])
def test_any_block_may_finish_last(shape, block_order, rng):
    # The partials are summed in their own order, not the blocks': bit-identical whichever block
    # draws the last ticket.
    A, b, T = _inputs(rng, shape, np.float64)
    first = _run(output_loss_delta, A, b, T, 1, 0.5)
    again = _run(output_loss_delta, A, b, T, 1, 0.5)
    want = _run(ref.output_loss_delta, A, b, T, 1, 0.5)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(first[1], want[1], **TOL[np.float64])
    np.testing.assert_allclose(first[2], want[2], rtol=LOSS_RTOL[np.float64])
    assert _launch.reduction_workspace(0)[0] == 0


@pytest.mark.sim
def test_prepared_launch_accumulates_the_running_sum(rng):
    A, b, T = _inputs(rng, (33, 3), np.float64)
    D, db, loss = np.empty_like(A), np.empty(3), np.zeros(2)
    D0, db0, loss0 = np.empty_like(A), np.empty(3), np.zeros(2)
    launch = prepare_output_loss_delta(A, b, T, 0, 0.25, D, db, loss)
    for _ in range(3):  # a training loop's batches: loss[0] is the last one's, loss[1] the sum
        launch()
        ref.output_loss_delta(A, b, T, 0, 0.25, D0, db0, loss0)
    np.testing.assert_allclose(D, D0, **TOL[np.float64])
    np.testing.assert_allclose(loss, loss0, rtol=1e-12)
    np.testing.assert_allclose(loss[1], 3 * loss[0] / 0.25, rtol=1e-12)


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
    np.testing.assert_allclose(loss[1] - RUNNING, 2e4 + float(a[2, 0]), rtol=1e-12)


@pytest.mark.sim
def test_rejects_bad_arguments():
    A = np.zeros((3, 2))
    ok = dict(b=np.zeros(2), T=np.zeros((3, 2)), D=np.zeros((3, 2)), db=np.zeros(2), loss=np.zeros(2))

    def call(**kw):
        a = {**ok, **kw}
        output_loss_delta(A, a["b"], a["T"], kw.get("pc", 1), 1.0, a["D"], a["db"], a["loss"])

    with pytest.raises(ValueError, match=r"T must have shape \(3, 2\)"):
        call(T=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"loss must have shape \(2,\)"):
        call(loss=np.zeros(1))
    with pytest.raises(TypeError, match="loss must be float64"):
        call(loss=np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match="positive_class must be 0 or 1"):
        call(pc=2)


@pytest.mark.sim
@pytest.mark.parametrize("shape", [(1, 1), (33, 3), (257, 10)])
def test_bf16_variant_writes_the_plain_outputs_and_the_bfloat16_bits_of_D(shape, rng):
    from bp_gpu.kernels.output_loss_delta import output_loss_delta_round

    from bp_gpu.precision import BF16, bf16_bits

    A, b, T = _inputs(rng, shape, np.float32)
    D, db, loss = _run(output_loss_delta, A, b, T, 1, 1 / shape[0])
    R = np.full((shape[0], shape[1] + 3), 0xDEAD, dtype=np.uint16)
    D2, db2, loss2 = _run(lambda *a: output_loss_delta_round(*a, R, BF16), A, b, T, 1, 1 / shape[0])
    np.testing.assert_array_equal(D2, D)
    np.testing.assert_array_equal(db2, db)
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(R[:, : shape[1]], bf16_bits(D))
    assert (R[:, shape[1] :] == 0xDEAD).all()
