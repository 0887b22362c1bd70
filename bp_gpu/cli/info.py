"""``bp-gpu info``: versions, which backends can run here and why, and which extras are installed."""

from __future__ import annotations

import argparse
import glob
import os
import platform
import re
import sys

import numpy as np

# What the cpu backend runs (bp_gpu/cpu_backend.py), in the words info and demo print.
CPU_BACKEND = "Numba-compiled steps, matrix products on NumPy's BLAS"

# The extras info reports, in this order (pyproject.toml's optional-dependencies).
SHOWN_EXTRAS = ("train", "data", "onnx", "mpi", "torch", "kernels")

_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, the usable backends and the installed extras",
                       description=__doc__)
    p.set_defaults(func=run)


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def nvidia_device_visible() -> bool | None:
    """Whether an NVIDIA GPU is visible here at all: the driver's device files (``/dev/nvidia0``
    ..., ``/proc/driver/nvidia/gpus/``; WSL2's ``/dev/dxg``) on Linux; macOS has no CUDA; None
    where it cannot be told (Windows)."""
    if sys.platform == "darwin":
        return False
    if not sys.platform.startswith("linux"):
        return None
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/proc/driver/nvidia/gpus/*")
                or os.path.exists("/dev/dxg"))


def extras() -> dict[str, list[str]] | None:
    """bp_gpu's extras and the distributions each installs, from the installed package's metadata
    (so never out of date with pyproject.toml); None when bp_gpu is not installed."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        requires = metadata("bp_gpu").get_all("Requires-Dist") or []
    except PackageNotFoundError:
        return None
    out: dict[str, list[str]] = {}
    for line in requires:
        m = _REQUIREMENT.match(line)
        if m and m.group(1).replace("-", "_").lower() != "bp_gpu":
            out.setdefault(m.group(2), []).append(m.group(1))
    return out


def extras_lines() -> list[str]:
    found = extras()
    if found is None:
        return ["extras: unknown (bp_gpu is not installed; run from a source tree)"]
    lines = ["extras (pip install 'bp_gpu[NAME]'):"]
    for name in SHOWN_EXTRAS:
        if name not in found:
            continue
        versions = {d: _version(d) for d in found[name]}
        missing = [d for d, v in versions.items() if v == "not installed"]
        if missing:  # some of an extra's packages may be there as dependencies of others
            state = f"not installed: missing {', '.join(missing)}"
        else:
            state = "installed (" + ", ".join(f"{d} {v}" for d, v in versions.items()) + ")"
        lines.append(f"  {name:8s}{state}")
    return lines


def cuda_line(ok: bool, why: str) -> str:
    if ok:
        return f"  cuda: usable - {why}"
    if nvidia_device_visible() is False:
        return ("  cuda: not usable - no NVIDIA GPU is visible on this machine (no /dev/nvidia* device); the cpu "
                "backend runs everything here (on a machine with one: pip install 'bp_gpu[cuda13]' or [cuda12])")
    return f"  cuda: not usable - {why}"


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..backends import available_backends, cuda_status

    ok, why = cuda_status()
    print(f"bp_gpu {__version__}  (Python {platform.python_version()}, {platform.machine()})")
    cupy = _version("cupy-cuda13x")
    if cupy == "not installed":
        cupy = _version("cupy-cuda12x")
    print(f"numpy {np.__version__}  numba {_version('numba')}  numba-cuda {_version('numba-cuda')}  cupy {cupy}")
    print(f"backends available: {', '.join(available_backends())}")
    print(f"  cpu : usable ({CPU_BACKEND})")
    print(cuda_line(ok, why))
    for line in extras_lines():
        print(line)
    return 0
