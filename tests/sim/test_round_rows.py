"""round_rows kernels (the bfloat16 copies of the batch and of the weights) vs bp_gpu.precision's
rounding: bit for bit, specials included."""

import numpy as np
import pytest
from bp_gpu.kernels.round_rows import round_rows, round_weights, take_rows_round

from bp_gpu import steps_numpy as ref
from bp_gpu.precision import BF16, bf16_bits, from_bf16_bits

SHAPES = [(1, 1), (7, 5), (33, 3), (9, 37)]  # ones, primes, more columns than the simulated grid
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1 + 2**-8, 1 + 3 * 2**-8, 3.4e38, 1e-40, -1e-45],
                    dtype=np.float32)  # ties to even both ways, overflow to inf, subnormals


def _floats(rng, shape):
    X = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32).view(np.float32).copy()
    flat = X.reshape(-1)
    flat[: min(flat.size, SPECIALS.size)] = SPECIALS[: flat.size]
    return X


def _same_bits(R, X):
    want = bf16_bits(X)
    nan = np.isnan(X)
    np.testing.assert_array_equal(R[:, : X.shape[1]][~nan], want[~nan])
    assert np.isnan(from_bf16_bits(R[:, : X.shape[1]][nan])).all()


@pytest.mark.sim
@pytest.mark.parametrize("shape", SHAPES)
def test_round_rows_is_bf16_bits(shape, rng):
    X = _floats(rng, shape)
    R = np.full((shape[0], shape[1] + 4), 0xDEAD, dtype=np.uint16)
    round_rows(X, R, BF16)
    _same_bits(R, X)
    assert (R[:, shape[1] :] == 0xDEAD).all()


@pytest.mark.sim
def test_take_rows_round_gathers_and_rounds_in_one_pass(rng):
    X = _floats(rng, (41, 13))
    idx = np.array([40, 0, 7, 7, -1, 3, 81], dtype=np.int64)  # repeats, and indices that wrap
    R = np.zeros((7, 16), dtype=np.uint16)
    take_rows_round(X, idx, R, BF16)
    _same_bits(R, X[idx % 41])
    with pytest.raises(ValueError, match="idx must be a contiguous 1-D int64 array"):
        take_rows_round(X, idx.astype(np.int32), R, BF16)


@pytest.mark.sim
def test_round_weights_writes_every_layer_by_the_map(rng):
    wmap = np.array([[0, 5, 13, 0, 16], [65, 3, 5, 80, 8], [80, 1, 3, 104, 8]], dtype=np.int64)
    params = _floats(rng, (1, 83 + 9))[0]
    R = np.full(112, 0xDEAD, dtype=np.uint16)
    round_weights(params, R, wmap, BF16)
    spec = np.full(112, np.float32(-7.0))
    ref.round_weights(params, spec, wmap, BF16)
    written = spec != -7.0
    np.testing.assert_array_equal(R[written & ~np.isnan(spec)], bf16_bits(spec[written & ~np.isnan(spec)]))
    assert (R[~written] == 0xDEAD).all()
    with pytest.raises(ValueError, match="does not map 83 weights"):
        round_weights(params, R[:100], wmap, BF16)
