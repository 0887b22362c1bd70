"""Launch geometry invariants the kernels rely on, for the simulator's and a device's settings."""

import itertools

import numpy as np
import pytest
from bp_gpu.kernels import _launch

from bp_gpu import steps_numpy as ref
from bp_gpu.cuda_host import CUDA_STEPS as K

SHAPES = [(n, o) for n, o in itertools.product([1, 2, 7, 33, 255, 4096, 65537], [1, 3, 31, 32, 33, 1024, 50000])]
# Grid caps: the simulator's; an H100's 132 SMs x 3, 4, 5 or 8 resident blocks (76, 64, 48 and
# 32 registers per thread: see _occupancy).
CAPS = {"simulator": [4], "h100": [132 * k for k in (3, 4, 5, 8)]}


@pytest.fixture(params=["simulator", "h100"])
def settings(request, monkeypatch):
    if request.param == "h100":  # the device settings: 256 threads, 32 wide
        monkeypatch.setattr(_launch, "THREADS", 256)
        monkeypatch.setattr(_launch, "MAX_TX", 32)
    return request.param


@pytest.mark.sim
def test_tiles_fit_the_reductions(settings):
    for cap in CAPS[settings]:
        for n_rows, n_cols in SHAPES:
            (gx, gy), (tx, ty) = _launch.tile_2d(n_rows, n_cols, cap)
            assert tx * ty == _launch.THREADS <= _launch.MAX_THREADS  # the shared scratch holds a block
            assert ty & (ty - 1) == 0 and tx & (tx - 1) == 0  # the reduction trees need powers of 2
            assert 1 <= gx * gy <= cap
            assert tx < 2 * n_cols  # narrow arrays (the output layer) get narrow blocks


@pytest.mark.sim
def test_1d_tiles_cover_any_length(settings):
    for cap in CAPS[settings]:
        for n in (1, 2, 255, 257, 10**7):
            grid, block = _launch.tile_1d(n, cap)
            assert block == _launch.THREADS and 1 <= grid <= cap


@pytest.mark.sim
def test_a_grid_fills_its_cap_when_the_array_is_large(settings):
    # One full wave: the cap is the kernel's real occupancy, so a large array uses all of it.
    for cap in CAPS[settings]:
        (gx, gy), _ = _launch.tile_2d(65537, 1024, cap)
        assert gx * gy > cap - gx  # at most one row of blocks short of the cap


@pytest.mark.sim
def test_empty_arrays():
    # No rows (a batch of none): the launch runs and the column sums are zeros, as the reference's.
    # No columns: a grid of no blocks, which launches nothing (the driver refuses a zero grid).
    assert _launch.tile_2d(0, 5, 4)[0] == (1, 1) and _launch.tile_2d(7, 0, 4)[0][0] == 0
    G, Z = np.empty((0, 5)), np.empty((0, 5))
    db, db_ref = np.full(5, 7.0), np.full(5, 7.0)
    K.sigmoid_delta_backward(G, Z, db)
    ref.sigmoid_delta_backward(G.copy(), Z, db_ref)
    np.testing.assert_array_equal(db, db_ref)
    A, b, T, D = np.empty((0, 3)), np.zeros(3), np.empty((0, 3)), np.empty((0, 3))
    runs = [(np.full(3, 7.0), np.array([5.0, 1.0])) for _ in range(2)]
    K.output_loss_delta(A, b, T, 1, 1.0, D, *runs[0])
    ref.output_loss_delta(A, b, T, 1, 1.0, D.copy(), *runs[1])
    for got, want in zip(*runs):
        np.testing.assert_array_equal(got, want)
    K.bias_sigmoid_forward(np.empty((4, 0)), np.empty(0))  # nothing to do, and nothing raised
