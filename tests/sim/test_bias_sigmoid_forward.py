"""bias_sigmoid_forward kernel vs its NumPy reference, in Numba's CUDA simulator."""

import numpy as np
import pytest
from bp_gpu.kernels.bias_sigmoid_forward import bias_sigmoid_forward, prepare_bias_sigmoid_forward

from bp_gpu import steps_numpy as ref

# (B, O): ones, primes, non-multiples of the (tiny, simulated) block; (257, 10) runs 4-row batches
# and ragged tails; (9, 37) has more column tiles than the capped grid, so the column grid-stride
# loop runs.
SHAPES = [(1, 1), (7, 5), (33, 3), (257, 10), (9, 37)]
TOL = {np.float32: dict(rtol=1e-6, atol=1e-7), np.float64: dict(rtol=1e-14, atol=1e-16)}


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, dtype, rng):
    A = (rng.standard_normal(shape) * 4).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    want, got = A.copy(), A.copy()
    ref.bias_sigmoid_forward(want, b)
    bias_sigmoid_forward(got, b)
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturates_without_nan_for_huge_inputs(dtype):
    big = np.finfo(dtype).max / 4
    A = np.array([[1e4, -1e4, big], [-big, 0.0, -30.0]], dtype=dtype)  # (2, 3)
    b = np.zeros(3, dtype=dtype)
    bias_sigmoid_forward(A, b)
    assert np.isfinite(A).all()
    np.testing.assert_array_equal(A[0], [1.0, 0.0, 1.0])
    assert A[1, 0] == 0.0 and A[1, 1] == 0.5 and 0 < A[1, 2] < 1e-12


@pytest.mark.sim
def test_prepared_launch_reads_the_arrays_at_each_call(rng):
    A = rng.standard_normal((33, 3))
    b = rng.standard_normal(3)
    want, got = A.copy(), A.copy()
    launch = prepare_bias_sigmoid_forward(got, b)
    for _ in range(2):  # in place: the second call works on the first call's output
        launch()
        ref.bias_sigmoid_forward(want, b)
    np.testing.assert_allclose(got, want, **TOL[np.float64])


@pytest.mark.sim
def test_rejects_mismatched_bias():
    with pytest.raises(ValueError, match=r"bias_sigmoid_forward: b must have shape \(3,\)"):
        bias_sigmoid_forward(np.zeros((2, 3)), np.zeros(4))


@pytest.mark.sim
@pytest.mark.parametrize("shape", [(1, 1), (33, 3), (257, 10)])
def test_bf16_variant_writes_the_plain_output_and_its_bfloat16_bits(shape, rng):
    from bp_gpu.kernels.bias_sigmoid_forward import bias_sigmoid_forward_round

    from bp_gpu.precision import BF16, bf16_bits

    A = (rng.standard_normal(shape) * 4).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    plain, got = A.copy(), A.copy()
    R = np.full((shape[0], shape[1] + 5), 0xDEAD, dtype=np.uint16)  # a padded row, marked
    bias_sigmoid_forward(plain, b)
    bias_sigmoid_forward_round(got, b, R, BF16)
    np.testing.assert_array_equal(got, plain)  # the same float32 arithmetic
    np.testing.assert_array_equal(R[:, : shape[1]], bf16_bits(got))
    assert (R[:, shape[1] :] == 0xDEAD).all()
    with pytest.raises(ValueError, match="bfloat16 copies only"):
        bias_sigmoid_forward_round(got, b, R, 2)
