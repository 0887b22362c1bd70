"""`bp-gpu --version` and `bp-gpu info`, run as a user runs them."""

import subprocess
import sys

import bp_gpu


def bp_gpu_cli(*args):
    return subprocess.run([sys.executable, "-m", "bp_gpu.cli", *args], capture_output=True, text=True, timeout=120)


def test_version():
    r = bp_gpu_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"bp-gpu {bp_gpu.__version__}"


def test_info_lists_backends_and_why_cuda_is_or_is_not_usable():
    r = bp_gpu_cli("info")
    assert r.returncode == 0, r.stderr
    assert f"backends available: {', '.join(bp_gpu.available_backends())}" in r.stdout
    cuda_line = next(line for line in r.stdout.splitlines() if line.strip().startswith("cuda:"))
    from bp_gpu.backends import cuda_status

    ok, why = cuda_status()
    assert ("not usable" not in cuda_line) == ok and why in cuda_line


def test_no_command_prints_help_and_fails():
    r = bp_gpu_cli()
    assert r.returncode == 2 and "usage: bp-gpu" in r.stdout
