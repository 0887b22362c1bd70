"""``bp-gpu info``: versions, and which backends can run here and why."""

from __future__ import annotations

import argparse
import platform

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions and the usable backends", description=__doc__)
    p.set_defaults(func=run)


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


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
    print("  cpu : usable (NumPy)")
    print(f"  cuda: {'usable' if ok else 'not usable'} - {why}")
    return 0
