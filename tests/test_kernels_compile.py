"""Every CUDA kernel compiles for real targets (cc 8.0, 9.0) without spilling; needs no GPU.

PTX from ``numba.cuda.compile_ptx`` (NVRTC), SASS from nvJitLink via ``cuda.core``, resource use
read from the linker log by ``bp_gpu.kernel_report`` (the same code ``bp-gpu kernels`` runs).
"""

import re
import subprocess
import sys

import numpy as np
import pytest

from bp_gpu.cli import main
from bp_gpu.kernel_report import (
    DTYPES,
    KernelInfo,
    kernel_signatures,
    loads_before_first_store,
    parse_link_log,
    ptx_of,
    report,
)

TARGETS = [(8, 0), (9, 0)]
KERNELS = {
    "bias_sigmoid_forward_kernel",
    "output_loss_delta_kernel",
    "sigmoid_delta_backward_kernel",
    "outer_sigmoid_delta_backward_kernel",
    "optimizer_update_kernel",
    "lamb_moments_kernel",
    "lamb_apply_kernel",
}
# float32 only: the variants of mixed precision (bfloat16 copies, TF32 rounding) and the copies of
# the batch and the weights (bp_gpu.precision).
FLOAT32_ONLY = {
    "bias_sigmoid_forward_bf16_kernel",
    "output_loss_delta_bf16_kernel",
    "sigmoid_delta_backward_bf16_kernel",
    "outer_sigmoid_delta_backward_bf16_kernel",
    "outer_sigmoid_delta_backward_tf32_kernel",
    "optimizer_update_bf16_kernel",
    "lamb_apply_bf16_kernel",
    "round_rows_bf16_kernel",
    "take_rows_bf16_kernel",
    "round_weights_bf16_kernel",
}
# Element-wise kernels and the loads each thread must issue before its first store: 4 rows of
# each array it reads per row (A; A and T; G and Z; D and Z), 4 elements of each array an optimizer
# reads (params and grads for every rule; LAMB: grads, m, v, params, then params, m, v). The
# optimizers' first blocks read up to 6 hyperparameters: every threshold here is above that.
LOAD_BATCHES = {
    "bias_sigmoid_forward_kernel": 4,
    "output_loss_delta_kernel": 8,
    "sigmoid_delta_backward_kernel": 8,
    "outer_sigmoid_delta_backward_kernel": 8,
    "optimizer_update_kernel": 8,
    "lamb_moments_kernel": 16,
    "lamb_apply_kernel": 12,
}


@pytest.mark.parametrize("cc", TARGETS)
def test_every_kernel_compiles_without_spills(cc):
    rows = report(cc)
    want = {(k, d) for k in KERNELS for d in DTYPES} | {(k, "float32") for k in FLOAT32_ONLY}
    assert {(r.kernel, r.dtype) for r in rows} == want
    for r in rows:
        where = f"{r.kernel} ({r.dtype}, sm_{cc[0]}{cc[1]})"
        assert r.spills == 0, f"{where} spills {r.spills} bytes"
        assert r.local_bytes == 0 and r.stack_bytes == 0, f"{where} uses local memory / stack"
        assert 0 < r.registers <= 128, f"{where} uses {r.registers} registers"
        assert r.shared_bytes <= 48 * 1024, f"{where} uses {r.shared_bytes} B of static shared memory"
        assert r.ptx_bytes > 1000
        assert r.blocks_per_sm >= 2, f"{where}: only {r.blocks_per_sm} blocks of 256 threads fit on an SM"


@pytest.mark.parametrize("cc", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", sorted(LOAD_BATCHES))
def test_element_wise_kernels_keep_several_loads_in_flight(kernel, dtype, cc):
    # Each thread loads a batch of rows before it stores any: the compiler cannot hoist a load
    # above a store it cannot prove does not alias it, so load-compute-store per row would keep
    # only one row's loads in flight.
    n = loads_before_first_store(ptx_of(kernel, dtype, cc))
    assert n >= LOAD_BATCHES[kernel], f"{kernel} ({dtype}, sm_{cc[0]}{cc[1]}): {n} loads before the first store"


@pytest.mark.parametrize("kernel", sorted(k for k in FLOAT32_ONLY if k.replace("_bf16", "").replace("_tf32", "")
                                          in LOAD_BATCHES))
def test_mixed_precision_variants_keep_their_loads_in_flight(kernel):
    # The copies are stored after the float32 outputs, so the loads batch as in the plain kernel.
    plain = kernel.replace("_bf16", "").replace("_tf32", "")
    n = loads_before_first_store(ptx_of(kernel, "float32", (9, 0)))
    assert n >= LOAD_BATCHES[plain], f"{kernel}: {n} loads before the first store"


def test_loads_before_first_store_reads_basic_blocks():
    ptx = "\n".join([
        "ld.global.f32 %f1, [%rd1];", "st.global.f32 [%rd2], %f1;", "ld.global.f32 %f2, [%rd3];",
        "$L__BB0_2:", "ld.global.nc.f32 %f3, [%rd1];", "ld.global.f32 %f4, [%rd4];",
        "ld.global.f32 %f5, [%rd5];", "atom.global.add.f64 %fd1, [%rd6], %fd2;", "ld.global.f32 %f6, [%rd7];",
    ])
    assert loads_before_first_store(ptx) == 3


def test_float32_forward_has_no_float64_arithmetic():
    # A bare float literal in device code promotes float32 math to float64 (slow on most GPUs).
    ptx = ptx_of("bias_sigmoid_forward_kernel", "float32")
    lines = [ln.strip() for ln in ptx.splitlines()]
    ops = [ln.split()[0] for ln in lines if ln and not ln.startswith((".", "/", "{", "}", "$"))]
    f64_ops = [op for op in ops if re.search(r"\.f64\b", op)]
    assert f64_ops == [], f"float64 instructions in the float32 forward kernel: {sorted(set(f64_ops))}"


def test_parse_link_log_reads_spills_and_resources():
    log = (
        "ptxas         .     8 bytes stack frame, 24 bytes spill stores, 16 bytes spill loads\n"
        "info    : used 255 registers, used 1 barriers, 8 stack, 2048 bytes smem, 656 bytes cmem[0], 8 bytes lmem\n"
    )
    got = parse_link_log(log, "k")
    assert got == dict(registers=255, stack_bytes=8, shared_bytes=2048, local_bytes=8, spill_stores=24, spill_loads=16)
    assert KernelInfo("k", "float32", (9, 0), ptx_bytes=1, **got).spills == 40
    with pytest.raises(RuntimeError, match="k: could not read resource use"):
        parse_link_log("no resource lines", "k")


def test_signatures_cover_every_kernel_module():
    assert {name for name, _, _ in kernel_signatures("float64")} == KERNELS


def test_cli_kernels_prints_the_table(capsys):
    assert main(["kernels", "--cc", "8.0", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["kernel", "dtype", "target"]
    body = [ln.split() for ln in out[2:]]
    assert {row[0] for row in body} == KERNELS | FLOAT32_ONLY
    assert all(row[1] == "float32" and row[2] == "sm_80" for row in body)
    assert all(1 <= int(row[4]) <= 8 for row in body)  # blocks of 256 threads per SM


def test_every_kernel_is_cached_on_disk():
    # cache=True: a process loads the compiled kernels from numba-cuda's on-disk cache (keyed by
    # the kernel's bytecode, signature, compute capability and numba-cuda version) instead of
    # compiling them again.
    import importlib

    from numba.cuda.dispatcher import CUDACache

    from bp_gpu.kernel_report import KERNEL_MODULES

    for mod in KERNEL_MODULES:
        module = importlib.import_module(f"bp_gpu.kernels.{mod}")
        for name, _, _ in module.signatures(np.dtype("float32")):
            assert isinstance(getattr(module, name)._cache, CUDACache), name


def test_cli_kernels_without_nvrtc_says_which_extra_to_install():
    # A process where cuda.pathfinder finds neither NVRTC nor nvJitLink, as after a plain install.
    code = """
import sys
import cuda.pathfinder as pf
from cuda.pathfinder._dynamic_libs import load_nvidia_dynamic_lib as loader

real = loader.load_nvidia_dynamic_lib
def missing(name):
    if name in ("nvrtc", "nvJitLink"):
        raise pf.DynamicLibNotFoundError(f'Failure finding "lib{name}.so.13 or lib{name}.so.12": not found\\nattached')
    return real(name)
pf.load_nvidia_dynamic_lib = loader.load_nvidia_dynamic_lib = missing
from bp_gpu.cli import main
sys.exit(main(["kernels", "--dtype", "float32"]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("bp-gpu kernels: error: ") and "libnvrtc.so.13" in lines[0]
    assert lines[0].endswith("needs NVRTC and nvJitLink: pip install 'bp_gpu[kernels]'")
