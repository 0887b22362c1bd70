"""Compile every CUDA kernel for a real target and read its resource use, without a GPU.

Each kernel of ``bp_gpu.kernels`` (with the variants of mixed precision, listed under float32: the
``*_bf16_kernel`` ones and the TF32 outer-product step) is compiled to PTX with
``numba.cuda.compile_ptx`` (NVRTC) for a compute capability, then linked to SASS with
``cuda.core``'s ``Linker`` (nvJitLink), whose verbose log gives registers, spills, shared and local
memory. Used by ``tests/test_kernels_compile.py``
(which fails on any spill) and by ``bp-gpu kernels``. Needs NVRTC and nvJitLink
(``pip install 'bp_gpu[kernels]'``), not a device; does not work under the simulator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from .backends import simulator_enabled

DTYPES = ("float32", "float64")
KERNEL_MODULES = (
    "bias_sigmoid_forward",
    "output_loss_delta",
    "sigmoid_delta_backward",
    "outer_sigmoid_delta_backward",
    "optimizer_update",
    "lamb_update",
    "round_rows",
)

_USED = re.compile(
    r"used (\d+) registers.*?(\d+) stack, (\d+) bytes smem.*?(\d+) bytes lmem"
)
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


@dataclass(frozen=True)
class KernelInfo:
    """Resource use of one kernel compiled for one dtype and compute capability."""

    kernel: str
    dtype: str
    cc: tuple[int, int]
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    shared_bytes: int  # static shared memory per block
    local_bytes: int
    stack_bytes: int
    ptx_bytes: int

    @property
    def spills(self) -> int:
        """Bytes spilled to local memory, stores plus loads (0 for a healthy kernel)."""
        return self.spill_stores + self.spill_loads

    @property
    def blocks_per_sm(self) -> int:
        """Blocks of the launchers' 256 threads resident at once on one SM (the grid cap per SM)."""
        from .kernels._launch import DEVICE_THREADS
        from .kernels._occupancy import blocks_per_sm

        return blocks_per_sm(self.cc, self.registers, DEVICE_THREADS, self.shared_bytes)


def kernel_signatures(dtype: str) -> list[tuple[str, Any, tuple]]:
    """(kernel name, Python function, Numba signature) of every kernel, for one dtype."""
    import importlib

    out = []
    for mod in KERNEL_MODULES:
        out.extend(importlib.import_module(f"bp_gpu.kernels.{mod}").signatures(np.dtype(dtype)))
    return out


def parse_link_log(log: str, where: str) -> dict[str, int]:
    """Registers, spills, stack, shared and local memory from an nvJitLink verbose log."""
    used, spill = _USED.search(log), _SPILL.search(log)
    if used is None or spill is None:
        raise RuntimeError(f"{where}: could not read resource use from the linker log:\n{log}")
    return {
        "registers": int(used.group(1)),
        "stack_bytes": int(used.group(2)),
        "shared_bytes": int(used.group(3)),
        "local_bytes": int(used.group(4)),
        "spill_stores": int(spill.group(1)),
        "spill_loads": int(spill.group(2)),
    }


def compile_kernel(fn: Any, sig: tuple, cc: tuple[int, int]) -> tuple[str, str]:
    """(PTX, linker log) of one kernel for compute capability cc."""
    try:
        from cuda.core import Linker, LinkerOptions, ObjectCode
    except ImportError:  # cuda-core before 0.4 kept these under .experimental
        from cuda.core.experimental import Linker, LinkerOptions, ObjectCode
    from numba import cuda

    ptx, _ = cuda.compile_ptx(fn, sig, device=False, cc=cc)
    linker = Linker(
        ObjectCode.from_ptx(ptx.encode()), options=LinkerOptions(arch=f"sm_{cc[0]}{cc[1]}", verbose=True)
    )
    linker.link("cubin")
    return ptx, linker.get_info_log()


def _missing_compiler_errors() -> tuple[type[BaseException], ...]:
    """What compiling raises when cuda-core, NVRTC or nvJitLink is not installed: ImportError, and
    cuda.pathfinder's DynamicLibNotFoundError for a shared library it cannot find
    (cuda-pathfinder: cuda/pathfinder/_dynamic_libs/load_dl_common.py)."""
    try:
        from cuda.pathfinder import DynamicLibNotFoundError
    except ImportError:
        return (ImportError,)
    return (ImportError, DynamicLibNotFoundError)


@cache
def _compiled(name: str, dtype: str, cc: tuple[int, int]) -> tuple[str, str]:
    """(PTX, linker log) of one kernel, compiled once per process: the report of a dtype subset and
    ``ptx_of`` reuse what a full report compiled."""
    for kname, fn, sig in kernel_signatures(dtype):
        if kname == name:
            return compile_kernel(fn, sig, cc)
    raise ValueError(f"no kernel named {name!r} for {dtype}; known: {[k for k, _, _ in kernel_signatures(dtype)]}")


@cache
def report(cc: tuple[int, int] = (9, 0), dtypes: tuple[str, ...] = DTYPES) -> tuple[KernelInfo, ...]:
    """Compile every kernel x dtype for cc; one ``KernelInfo`` each (cached per process)."""
    if simulator_enabled():
        raise RuntimeError(
            "kernel compile checks need the real CUDA target: unset NUMBA_ENABLE_CUDASIM "
            "(the simulator replaces numba.cuda in this process)"
        )
    rows = []
    for dtype in dtypes:
        for name, _, _ in kernel_signatures(dtype):
            where = f"{name} ({dtype}, sm_{cc[0]}{cc[1]})"
            try:
                ptx, log = _compiled(name, dtype, cc)
            except _missing_compiler_errors() as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise RuntimeError(
                    f"{where}: cannot compile ({reason}); the kernel report needs NVRTC and nvJitLink: "
                    "pip install 'bp_gpu[kernels]'"
                ) from exc
            rows.append(KernelInfo(name, dtype, cc, ptx_bytes=len(ptx.encode()), **parse_link_log(log, where)))
    return tuple(rows)


def ptx_of(name: str, dtype: str, cc: tuple[int, int] = (9, 0)) -> str:
    """The PTX of one kernel by name (for tests that inspect the generated code)."""
    return _compiled(name, dtype, cc)[0]


_LABEL = re.compile(r"^\$L__BB\d+_\d+:", re.M)


def loads_before_first_store(ptx: str) -> int:
    """The most global loads any basic block of ``ptx`` issues before its first global store (or
    atomic): a lower bound on the loads a thread keeps in flight in its inner loop. The SASS
    scheduler (ptxas) may move loads earlier, never below a store that may alias them."""
    best = 0
    for block in _LABEL.split(ptx):
        n = 0
        for line in block.splitlines():
            op = line.strip()
            if op.startswith("ld.global"):
                n += 1
            elif op.startswith(("st.global", "atom.global", "red.global")):
                break
        best = max(best, n)
    return best


def format_table(rows: tuple[KernelInfo, ...] | list[KernelInfo]) -> str:
    """The report as an aligned text table, one line per kernel x dtype."""
    head = ("kernel", "dtype", "target", "registers", "blocks/SM", "spills (B)", "smem (B)", "lmem (B)", "PTX (B)")
    lines = [
        (r.kernel, r.dtype, f"sm_{r.cc[0]}{r.cc[1]}", str(r.registers), str(r.blocks_per_sm), str(r.spills),
         str(r.shared_bytes), str(r.local_bytes), str(r.ptx_bytes))
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) if k < 3 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines])
