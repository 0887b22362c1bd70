"""The optimizer kernels (SGD, momentum, Adam, AdamW over the flat buffer; LAMB's two launches) vs
their NumPy reference, over several steps of a schedule: the step count advances on the device and
the last-block ticket is back at 0 after every launch (several blocks in these grids)."""

import numpy as np
import pytest
from bp_gpu.kernels import _launch
from bp_gpu.kernels.lamb_update import geometry, lamb_update, prepare_lamb_update
from bp_gpu.kernels.optimizer_update import optimizer_update

from bp_gpu import steps_numpy as ref
from bp_gpu.optim import hyper as H

TOL = {np.float32: dict(rtol=1e-6, atol=1e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}
ROWS = {H.SGD: 0, H.MOMENTUM: 1, H.ADAM: 2, H.ADAMW: 2}


def _hyper(beta1=0.9):
    h = np.zeros(H.N_HYPER)
    h[[H.SCHEDULE, H.LR, H.WARMUP, H.TOTAL, H.FINAL]] = H.WARMUP_COSINE, 0.05, 2, 10, 0.0
    h[[H.BETA1, H.BETA2, H.EPS, H.WEIGHT_DECAY]] = beta1, 0.999, 1e-8, 0.01
    return h


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", [H.SGD, H.MOMENTUM, H.ADAM, H.ADAMW])
# (1300, 1000): past 4 elements per thread of the simulator's grid, so the batched loop runs, with a
# ragged tail and the weight/bias boundary inside a batch.
@pytest.mark.parametrize("n_params, n_weights", [(1, 0), (1, 1), (47, 40), (300, 257), (1300, 1001)])
def test_optimizer_update_matches_reference(rule, dtype, n_params, n_weights, rng):
    p = rng.standard_normal(n_params).astype(dtype)
    g = rng.standard_normal(n_params).astype(dtype)
    rows = ROWS[rule]
    st = (rng.random((rows, n_params)) * 0.1).astype(dtype) if rows else np.zeros((1, 1), dtype)
    runs = []
    for step in (ref.optimizer_update, optimizer_update):
        x, s, h, g_in = p.copy(), st.copy(), _hyper(0.8 if rule == H.MOMENTUM else 0.9), g.copy()
        for _ in range(3):
            step(rule, x, g_in, s, h, n_weights)
        np.testing.assert_array_equal(g_in, g)  # the gradient buffer is not modified
        runs.append((x, s, h))
    (x0, s0, h0), (x1, s1, h1) = runs
    np.testing.assert_allclose(x1, x0, **TOL[dtype])
    np.testing.assert_allclose(s1, s0, **TOL[dtype])
    np.testing.assert_array_equal(h1, h0)  # STEP = 3, LR_LAST, TICKET back at 0, config untouched


@pytest.mark.sim
def test_optimizer_update_uses_several_blocks():
    grid, block = _launch.tile_1d(300)
    assert grid > 1  # so the ticket decides which block advances the step
    assert 1300 > 4 * grid * block  # the largest case above runs the batched loop


@pytest.mark.sim
def test_lamb_geometry_runs_the_batched_loop():
    (gx, k), threads = geometry(np.array([0, 1100, 1301]))
    assert 1100 > 4 * gx * threads


@pytest.mark.sim
@pytest.mark.parametrize("dtype, segments", [(np.float64, [0, 300]), (np.float64, [0, 100, 257, 280, 300]),
                                             (np.float32, [0, 3, 5, 7, 8]), (np.float32, [0, 1100, 1301])])
def test_lamb_update_matches_reference(dtype, segments, rng):
    segments = np.array(segments, dtype=np.int64)
    n = int(segments[-1])
    n_weights = int(segments[(len(segments) - 1) // 2]) if len(segments) > 2 else n
    p = rng.standard_normal(n).astype(dtype)
    if len(segments) > 2:
        p[segments[-2]:] = 0  # a bias still at 0: its trust ratio is 1
    g = rng.standard_normal(n).astype(dtype)
    runs = []
    for step in (ref.lamb_update, lamb_update):
        x, s, h = p.copy(), np.zeros((2, n), dtype), _hyper()
        for _ in range(3):
            step(x, g, s, h, n_weights, segments)
        runs.append((x, s, h))
    (x0, s0, h0), (x1, s1, h1) = runs
    np.testing.assert_allclose(x1, x0, **TOL[dtype])
    np.testing.assert_allclose(s1, s0, **TOL[dtype])
    np.testing.assert_array_equal(h1, h0)


@pytest.mark.sim
def test_two_lamb_steps_of_the_same_shapes_keep_their_own_work(rng, monkeypatch):
    # Two LAMB optimizers of one architecture (or an eager step and a graph replayed on another
    # stream): their launches may interleave, launch 1 of one between the two of the other. Each
    # prepared pair writes its trust ratios into its own work buffer, so each step is its own.
    launches = []
    real = _launch.prepared
    monkeypatch.setattr(_launch, "prepared", lambda *a: launches.append(real(*a)) or launches[-1])
    segments = np.array([0, 12, 15, 19, 20], dtype=np.int64)  # W1 (4, 3), W2 (1, 3); b1 (4,), b2 (1,)
    runs = []
    for _ in range(2):
        p, g = rng.standard_normal(20), rng.standard_normal(20)
        runs.append([(p.copy(), g, np.zeros((2, 20)), _hyper()), (p, g, np.zeros((2, 20)), _hyper())])
        prepare_lamb_update(*runs[-1][1], 15, segments)
    moments_a, apply_a, moments_b, apply_b = launches
    for launch in (moments_a, moments_b, apply_a, apply_b):
        launch()
    for (x0, g, s0, h0), (x1, _, s1, h1) in runs:
        ref.lamb_update(x0, g, s0, h0, 15, segments)
        np.testing.assert_allclose(x1, x0, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(s1, s0, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(h1, h0)


@pytest.mark.sim
def test_eager_lamb_steps_use_their_streams_work(monkeypatch):
    segments = np.array([0, 3, 4], dtype=np.int64)
    for ptr in (0x10, 0x20, 0x10):  # eager steps on two streams, then the first again
        monkeypatch.setattr(_launch, "_stream_ptr", lambda ptr=ptr: ptr)
        lamb_update(np.ones(4), np.ones(4), np.zeros((2, 4)), _hyper(), 3, segments)
    keys = [k for k in _launch._workspaces if k[2] == "lamb_work" and k[1] in (0x10, 0x20)]
    assert sorted(k[1] for k in keys) == [0x10, 0x20]
    with pytest.raises(ValueError, match="work must be a contiguous float64 array of at least"):
        prepare_lamb_update(np.ones(4), np.ones(4), np.zeros((2, 4)), _hyper(), 3, segments, np.zeros(1))


@pytest.mark.sim
def test_lamb_geometry_covers_each_segment():
    (gx, k), _ = geometry(np.array([0, 300]))
    assert k == 1 and gx > 1  # one segment over several blocks: the partials are summed
    (gx, k), _ = geometry(np.array([0, 100, 257, 280, 300]))
    assert k == 4 and gx >= 1


@pytest.mark.sim
def test_rejects_bad_arguments():
    p = np.zeros(4)
    with pytest.raises(ValueError, match="unknown update rule 7"):
        optimizer_update(7, p, p.copy(), np.zeros((1, 1)), _hyper(), 0)
    with pytest.raises(ValueError, match=r"state must have shape \(2, 4\)"):
        optimizer_update(H.ADAM, p, p.copy(), np.zeros((1, 4)), _hyper(), 0)
    with pytest.raises(ValueError, match=r"n_weights must be in \[0, 4\]"):
        optimizer_update(H.SGD, p, p.copy(), np.zeros((1, 1)), _hyper(), 5)
    with pytest.raises(ValueError, match="segments must rise from 0 to 4"):
        lamb_update(p, p.copy(), np.zeros((2, 4)), _hyper(), 2, np.array([0, 3]))


# Three layers as an engine maps them, (start, rows, cols, dst, ld): W (17, 31), (9, 17), (1, 9) with
# rows padded to 8 elements; 689 weights, then 27 biases; 716 > 4 x 4 x 32: the batched loop runs.
WMAP = np.array([[0, 17, 31, 0, 32], [527, 9, 17, 544, 24], [680, 1, 9, 760, 16]], dtype=np.int64)
N_WEIGHTS, N_PARAMS, COPY = 689, 716, 776


@pytest.mark.sim
@pytest.mark.parametrize("lamb", [False, True])
def test_bf16_variants_update_as_the_plain_kernels_and_copy_the_weights_in_the_same_pass(lamb, rng):
    from bp_gpu.kernels.lamb_update import lamb_update_round
    from bp_gpu.kernels.optimizer_update import optimizer_update_round

    from bp_gpu.precision import BF16, bf16_bits

    p = rng.standard_normal(N_PARAMS).astype(np.float32)
    g = rng.standard_normal(N_PARAMS).astype(np.float32)
    segments = np.array([0, 527, 680, N_WEIGHTS, 706, 715, N_PARAMS], dtype=np.int64)
    runs = []
    for copy in (False, True):
        x, s, h, R = p.copy(), np.zeros((2, N_PARAMS), np.float32), _hyper(), np.full(COPY, 0xDEAD, np.uint16)
        if lamb:
            lamb_update_round(x, g, s, h, N_WEIGHTS, segments, R, WMAP, BF16) if copy else \
                lamb_update(x, g, s, h, N_WEIGHTS, segments)
        else:
            optimizer_update_round(H.ADAM, x, g, s, h, N_WEIGHTS, R, WMAP, BF16) if copy else \
                optimizer_update(H.ADAM, x, g, s, h, N_WEIGHTS)
        runs.append((x, s, h, R))
    (x0, s0, h0, _), (x1, s1, h1, R) = runs
    np.testing.assert_array_equal(x1, x0)
    np.testing.assert_array_equal(s1, s0)
    np.testing.assert_array_equal(h1, h0)
    want = np.full(COPY, 0xDEAD, np.uint16)
    for start, rows, cols, dst, ld in WMAP:
        want[dst : dst + rows * ld].reshape(rows, ld)[:, :cols] = bf16_bits(x1[start : start + rows * cols]).reshape(
            rows, cols)
    np.testing.assert_array_equal(R, want)  # every weight's bits, the padding and the biases untouched
