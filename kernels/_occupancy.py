"""Resident blocks per SM of a kernel, from its registers and shared memory: the grid-size cap.

Not a kernel. The launchers cap each grid at about one wave of the device (blocks that are all
resident at once) and grid-stride over the rest, so the cap must be the kernel's real occupancy:
at 44-74 registers per thread only 3-5 blocks of 256 threads fit on an SM, not the 8 that the
thread limit alone would allow, and a grid sized for 8 runs in 1.6-2.7 waves with a ragged tail.

``blocks_per_sm`` is the CUDA occupancy calculator's arithmetic for the targets we compile for
(``cudaOccMaxActiveBlocksPerMultiprocessor`` in the toolkit's ``include/cuda_occupancy.h``: the
warp, block, register and shared-memory limits, the minimum of the four), with the per-target
limits of the CUDA C++ Programming Guide, "Compute Capabilities", table "Technical Specifications
per Compute Capability" (https://docs.nvidia.com/cuda/cuda-c-programming-guide/#compute-capabilities),
and the allocation units of ``cuda_occupancy.h`` (``cudaOccRegAllocationGranularity`` 256 registers
per warp, ``cudaOccSubPartitionsPerMultiprocessor`` 4, ``cudaOccSMemAllocationGranularity`` 128 B,
1 KB of shared memory reserved per block from cc 8.0). Barriers (one per block here) never bind.
The sm_90 linker log's "bytes smem" already includes that 1 KB (2048 B declared, 3072 reported);
counting it again only lowers the shared-memory limit, which is 50+ blocks here, far from binding.
"""

from __future__ import annotations

from typing import NamedTuple

WARP = 32
_REG_UNIT = 256  # registers are allocated per warp in units of 256
_SUB_PARTITIONS = 4  # the register file is split into 4 quarters, each serving its own warps
_SMEM_UNIT = 128  # bytes
_SMEM_RESERVED = 1024  # bytes per block, reserved by the driver from cc 8.0
_MAX_REGS_PER_THREAD = 255


class Target(NamedTuple):
    """Per-SM limits of one compute capability."""

    max_threads: int  # resident threads per SM
    max_blocks: int  # resident blocks per SM
    registers: int  # 32-bit registers per SM (also the most one block may use)
    shared: int  # bytes of shared memory per SM at the largest carveout


TARGETS: dict[tuple[int, int], Target] = {
    (8, 0): Target(2048, 32, 65536, 164 * 1024),  # A100
    (8, 6): Target(1536, 16, 65536, 100 * 1024),  # GA10x
    (8, 9): Target(1536, 24, 65536, 100 * 1024),  # Ada
    (9, 0): Target(2048, 32, 65536, 228 * 1024),  # H100 / H200
}


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def blocks_per_sm(cc: tuple[int, int], registers: int, threads: int, shared_bytes: int = 0) -> int:
    """Blocks of ``threads`` threads that are resident at once on one SM of compute capability
    ``cc``, for a kernel using ``registers`` per thread and ``shared_bytes`` of shared memory per
    block (static plus dynamic). 0 if one block does not fit.

    Raises KeyError for a compute capability outside ``TARGETS`` (the caller asks the driver).
    """
    t = TARGETS[tuple(cc)]
    warps = -(-threads // WARP)
    by_threads = (t.max_threads // WARP) // warps
    regs_per_warp = _round_up(max(registers, 1) * WARP, _REG_UNIT)
    # The hardware check assumes a block takes warps from every sub-partition at once.
    if registers > _MAX_REGS_PER_THREAD or regs_per_warp * _round_up(warps, _SUB_PARTITIONS) > t.registers:
        return 0
    warps_by_regs = (t.registers // _SUB_PARTITIONS // regs_per_warp) * _SUB_PARTITIONS
    by_registers = warps_by_regs // warps
    smem = _round_up(shared_bytes + _SMEM_RESERVED, _SMEM_UNIT)
    by_shared = t.shared // smem
    return min(by_threads, t.max_blocks, by_registers, by_shared)
