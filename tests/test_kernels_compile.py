"""Every CUDA kernel compiles for real targets (cc 8.0, 9.0) without spilling; needs no GPU.

PTX from ``numba.cuda.compile_ptx`` (NVRTC), SASS from nvJitLink via ``cuda.core``, resource use
read from the linker log by ``bp_gpu.kernel_report`` (the same code ``bp-gpu kernels`` runs).
"""

import re
import subprocess
import sys

import pytest

from bp_gpu.cli import main
from bp_gpu.kernel_report import DTYPES, KernelInfo, kernel_signatures, parse_link_log, ptx_of, report

TARGETS = [(8, 0), (9, 0)]
KERNELS = {
    "bias_sigmoid_forward_kernel",
    "output_loss_delta_kernel",
    "output_loss_delta_finish_kernel",
    "sigmoid_delta_backward_kernel",
    "column_sum_kernel",
    "optimizer_update_kernel",
    "lamb_moments_kernel",
    "lamb_apply_kernel",
}


@pytest.mark.parametrize("cc", TARGETS)
def test_every_kernel_compiles_without_spills(cc):
    rows = report(cc)
    assert {(r.kernel, r.dtype) for r in rows} == {(k, d) for k in KERNELS for d in DTYPES}
    for r in rows:
        where = f"{r.kernel} ({r.dtype}, sm_{cc[0]}{cc[1]})"
        assert r.spills == 0, f"{where} spills {r.spills} bytes"
        assert r.local_bytes == 0 and r.stack_bytes == 0, f"{where} uses local memory / stack"
        assert 0 < r.registers <= 128, f"{where} uses {r.registers} registers"
        assert r.shared_bytes <= 48 * 1024, f"{where} uses {r.shared_bytes} B of static shared memory"
        assert r.ptx_bytes > 1000


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
    assert {row[0] for row in body} == KERNELS
    assert all(row[1] == "float32" and row[2] == "sm_80" for row in body)


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
