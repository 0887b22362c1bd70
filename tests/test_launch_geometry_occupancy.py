"""Grid caps from real occupancy (``kernels/_occupancy.py``, ``_launch.max_blocks``), without a GPU.

The expected values are worked by hand from the CUDA occupancy calculator's rules
(``cuda_occupancy.h``: registers per warp rounded up to 256, a quarter of the register file per
sub-partition, 1 KB of shared memory reserved per block) and the per-target limits of the CUDA
C++ Programming Guide's "Technical Specifications per Compute Capability" table.
"""

import pytest
from bp_gpu.kernels import _launch, _occupancy


@pytest.mark.parametrize(
    "cc, registers, threads, shared, expected, why",
    [
        ((9, 0), 64, 256, 0, 4, "64 x 32 = 2048 regs a warp; 16384 / 2048 = 8 warps a quarter, 32 / 8"),
        ((9, 0), 72, 256, 3072, 3, "72 x 32 = 2304 regs a warp; 16384 / 2304 = 7 warps a quarter, 28 / 8"),
        ((8, 0), 44, 256, 3072, 5, "44 x 32 = 1408 -> 1536 regs a warp; 10 warps a quarter, 40 / 8"),
        ((8, 0), 32, 256, 0, 8, "registers allow 8; 2048 threads / 256 allow 8"),
        ((8, 6), 32, 256, 0, 6, "1536 threads / 256"),
        ((8, 9), 32, 256, 0, 6, "1536 threads / 256"),
        ((8, 0), 16, 32, 0, 32, "one-warp blocks: the block limit, 32"),
        ((8, 6), 16, 32, 0, 16, "one-warp blocks: the block limit, 16"),
        ((8, 9), 16, 32, 0, 24, "one-warp blocks: the block limit, 24"),
        ((8, 6), 32, 64, 48 * 1024, 2, "(48 KB + 1 KB reserved) per block, 100 KB an SM"),
        ((9, 0), 255, 256, 0, 1, "255 x 32 -> 8192 regs a warp; 2 warps a quarter, 8 / 8"),
        ((9, 0), 64, 1024, 0, 1, "32 warps of 2048 regs: the whole register file"),
        ((9, 0), 65, 1024, 0, 0, "65 x 32 -> 2304 regs a warp x 32 warps > 65536: does not fit"),
    ],
)
def test_blocks_per_sm_matches_hand_computed_occupancy(cc, registers, threads, shared, expected, why):
    assert _occupancy.blocks_per_sm(cc, registers, threads, shared) == expected, why


def test_unknown_target_is_a_key_error():
    with pytest.raises(KeyError):
        _occupancy.blocks_per_sm((7, 5), 32, 256)


class _Kernel:
    def __init__(self, regs, shared=2048):
        self.regs_per_thread, self.shared_mem_per_block = regs, shared


@pytest.fixture
def h100(monkeypatch):
    monkeypatch.setattr(_launch, "_device_info", lambda: (132, (9, 0)))
    monkeypatch.setattr(_launch, "_caps", {})


def test_max_blocks_is_one_wave_of_the_kernel(h100):
    assert _launch.max_blocks(_Kernel(64), 256) == 4 * 132
    assert _launch.max_blocks(_Kernel(48), 256) == 5 * 132
    assert _launch.max_blocks(None, 256) == 8 * 132  # the thread limit: an upper bound of every cap


def test_max_blocks_asks_the_driver_for_targets_outside_the_table(monkeypatch):
    from numba.cuda.cudadrv import devices

    monkeypatch.setattr(_launch, "_device_info", lambda: (148, (10, 0)))
    monkeypatch.setattr(_launch, "_caps", {})
    asked = []

    class _Context:
        def get_active_blocks_per_multiprocessor(self, func, blocksize, memsize):
            asked.append((func, blocksize, memsize))
            return 3

    class _Library:
        def get_cufunc(self):
            return "cufunc"

    kernel = _Kernel(64)
    kernel._codelibrary = _Library()
    monkeypatch.setattr(devices, "get_context", lambda: _Context())
    assert _launch.max_blocks(kernel, 256) == 3 * 148
    assert asked == [("cufunc", 256, 0)]
    assert _launch.max_blocks(kernel, 256) == 3 * 148 and len(asked) == 1  # cached


def test_a_grid_is_one_wave_for_its_kernel(h100, monkeypatch):
    monkeypatch.setattr(_launch, "THREADS", 256)
    monkeypatch.setattr(_launch, "MAX_TX", 32)
    # The W1 backward (1024 x 64) at 48 registers: 5 blocks per SM fill 660 blocks; it needs 256.
    (gx, gy), _ = _launch.tile_2d(1024, 64, _launch.max_blocks(_Kernel(48)))
    assert (gx, gy) == (2, 128)
    # A large layer: exactly one wave of 4 blocks per SM (2 column blocks x 264 row blocks).
    (gx, gy), _ = _launch.tile_2d(65536, 64, _launch.max_blocks(_Kernel(64)))
    assert gx * gy == 4 * 132
