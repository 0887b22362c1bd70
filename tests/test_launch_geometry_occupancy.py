"""Grid caps from real occupancy (``kernels/_occupancy.py``), without a GPU.

The expected values are worked by hand from the CUDA occupancy calculator's rules
(``cuda_occupancy.h``: registers per warp rounded up to 256, a quarter of the register file per
sub-partition, 1 KB of shared memory reserved per block) and the per-target limits of the CUDA
C++ Programming Guide's "Technical Specifications per Compute Capability" table.
"""

import pytest
from bp_gpu.kernels import _occupancy


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
