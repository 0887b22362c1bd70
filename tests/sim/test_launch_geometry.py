"""Launch geometry invariants the kernels rely on, for the simulator's and a device's settings."""

import itertools

import pytest
from bp_gpu.kernels import _launch

SHAPES = [(n, o) for n, o in itertools.product([1, 2, 7, 33, 255, 4096, 65537], [1, 3, 31, 32, 33, 1024, 50000])]


@pytest.fixture(params=["simulator", "h100"])
def settings(request, monkeypatch):
    if request.param == "h100":  # the device settings: 256 threads, 32 wide, 132 SMs x 8 blocks
        monkeypatch.setattr(_launch, "THREADS", 256)
        monkeypatch.setattr(_launch, "MAX_TX", 32)
        monkeypatch.setattr(_launch, "max_blocks", lambda: 8 * 132)
    return request.param


@pytest.mark.sim
def test_tiles_fit_the_reductions_and_the_workspace(settings):
    cap = _launch.max_blocks()
    for n_rows, n_cols in SHAPES:
        (gx, gy), (tx, ty) = _launch.tile_2d(n_rows, n_cols)
        assert tx * ty == _launch.THREADS <= _launch.MAX_THREADS  # the shared scratch holds a block
        assert ty & (ty - 1) == 0 and tx & (tx - 1) == 0  # the reduction trees need powers of 2
        assert 1 <= gx * gy <= cap
        assert tx < 2 * n_cols  # narrow arrays (the output layer) get narrow blocks
        # the (NB, O) partials of a multi-row grid fit the workspace allocated once
        if gy > 1:
            assert gy * n_cols <= cap * _launch.MAX_TX


@pytest.mark.sim
def test_1d_tiles_cover_any_length(settings):
    for n in (1, 2, 255, 257, 10**7):
        grid, block = _launch.tile_1d(n)
        assert block == _launch.THREADS and 1 <= grid <= _launch.max_blocks()
