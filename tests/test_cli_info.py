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
    assert ("not usable" not in cuda_line) == ok
    assert why in cuda_line or "no NVIDIA GPU is visible on this machine" in cuda_line
    cpu_line = next(line for line in r.stdout.splitlines() if line.strip().startswith("cpu :"))
    assert "Numba-compiled steps" in cpu_line and "NumPy)" not in cpu_line  # what the cpu backend runs


def test_info_says_there_is_no_device_and_lists_the_extras(capsys, monkeypatch):
    from importlib.metadata import version

    import bp_gpu.backends
    from bp_gpu.cli import info, main

    monkeypatch.setattr(bp_gpu.backends, "cuda_status", lambda: (False, "CuPy is not importable (...)"))
    monkeypatch.setattr(info, "nvidia_device_visible", lambda: False)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cuda: not usable - no NVIDIA GPU is visible on this machine" in out and "CuPy is not importable" not in out
    lines = out.splitlines()
    extras = lines[lines.index("extras (pip install 'bp_gpu[NAME]'):") + 1:]
    assert [e.split()[0] for e in extras] == [n for n in info.SHOWN_EXTRAS if n in info.extras()]
    assert {"train", "data", "onnx", "mpi", "kernels"} <= {e.split()[0] for e in extras}
    data = next(e for e in extras if e.split()[0] == "data")
    assert data.split(None, 1)[1] == f"installed (pyarrow {version('pyarrow')})"  # the test extra has it
    # With a device the driver shows, the reason is cuda_status's own.
    monkeypatch.setattr(info, "nvidia_device_visible", lambda: True)
    assert main(["info"]) == 0
    assert "cuda: not usable - CuPy is not importable (...)" in capsys.readouterr().out


def test_extras_are_read_from_the_installed_metadata(monkeypatch):
    import importlib.metadata

    from bp_gpu.cli import info

    class Meta:
        def get_all(self, key):
            return ['numpy>=1.24', 'pyarrow>=16; extra == "data"', 'onnx>=1.15; extra == "onnx"',
                    'nosuchpackage-xyz; extra == "onnx"', 'bp_gpu[kernels]; extra == "test"']

    monkeypatch.setattr(importlib.metadata, "metadata", lambda name: Meta())
    assert info.extras() == {"data": ["pyarrow"], "onnx": ["onnx", "nosuchpackage-xyz"]}
    assert info.extras_lines()[2] == "  onnx    not installed: missing nosuchpackage-xyz"

