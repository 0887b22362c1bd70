"""Which backends can run here, and why CUDA can or cannot.

- ``cpu``: NumPy arrays, the steps of ``bp_gpu.steps_numpy``. Always usable.
- ``cuda``: CuPy arrays and cuBLAS GEMMs, Numba CUDA kernels from ``bp_gpu.kernels``. Usable with
  CuPy, a driver and a device; or, with ``NUMBA_ENABLE_CUDASIM=1``, in Numba's CUDA simulator, where
  the same kernels run as Python and NumPy stands in for CuPy (how the tests prove the kernels
  without a GPU).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

BACKENDS = ("cpu", "cuda")


class BackendUnavailableError(RuntimeError):
    """The backend that was asked for cannot run on this machine; the message says why and how to fix."""


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator is on (it must be set before numba.cuda is imported)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """(usable, reason): whether ``backend="cuda"`` can run, in words a user can act on."""
    if simulator_enabled():
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run as Python on the CPU"
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CuPy build that fails to load its CUDA libraries
        return False, (
            f"CuPy is not importable ({type(exc).__name__}: {exc}). "
            "Install it with: pip install 'bp_gpu[cuda13]' (CUDA 13 driver) or 'bp_gpu[cuda12]'"
        )
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no usable CUDA driver ({type(exc).__name__}: {exc}); install the NVIDIA driver"
    if n == 0:
        return False, "the CUDA driver sees no device"
    try:
        from numba import cuda

        if not cuda.is_available():
            return False, "numba-cuda cannot use the driver; install 'numba-cuda[cu13]' (or [cu12])"
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        name = name.decode() if isinstance(name, bytes) else name
    except Exception as exc:
        return False, f"numba-cuda failed to start ({type(exc).__name__}: {exc})"
    return True, f"CUDA device: {name} ({n} visible)"


def available_backends() -> list[str]:
    """The backends usable here, best last: ``["cpu"]`` or ``["cpu", "cuda"]``."""
    return ["cpu", "cuda"] if cuda_status()[0] else ["cpu"]


def resolve_backend(backend: str) -> str:
    """Map "auto" to the best usable backend; raise if "cuda" is asked for and cannot run."""
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be one of 'auto', 'cpu', 'cuda'; got {backend!r}")
    if backend == "auto":
        return available_backends()[-1]
    if backend == "cuda":
        ok, why = cuda_status()
        if not ok:
            raise BackendUnavailableError(f"backend='cuda' is not usable: {why}. Use backend='cpu' or 'auto'.")
    return backend


def make_engine(backend: str, layer_sizes: tuple[int, ...], dtype: np.dtype, precision: str = "highest"):
    """A fresh ``Engine`` for an already resolved backend name (``precision``: see ``bp_gpu.precision``)."""
    from .engine import Engine

    if backend == "cpu":
        from .cpu_backend import CPU_STEPS

        return Engine(np, CPU_STEPS, layer_sizes, dtype, "cpu", precision)
    from .cuda_host import make_cuda_engine

    return make_cuda_engine(layer_sizes, dtype, precision)
