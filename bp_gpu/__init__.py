"""bp_gpu: sigmoid multilayer perceptrons trained by backpropagation, on NVIDIA GPUs or any CPU.

The math is in ``docs/math.md`` of the repository; ``bp_gpu.reference`` is it in NumPy.
"""

from ._validate import to_numpy
from ._version import __version__
from .backends import BackendUnavailableError, available_backends
from .mlp import MLP

__all__ = ["MLP", "MLPClassifier", "BackendUnavailableError", "available_backends", "load", "to_numpy",
           "__version__"]

# Subpackages reachable as attributes after a plain `import bp_gpu` (bp_gpu.data.open(...)), imported
# on first use as SciPy's are (scipy/__init__.py: __getattr__ and __dir__); `torch` once it exists.
# For each, the module it needs beyond NumPy and Numba and the extra that installs it.
_SUBPACKAGES: dict[str, tuple[str, str] | None] = {"data": None, "optim": None, "torch": ("torch", "torch")}


def _reachable(name: str) -> bool:
    """Whether subpackage ``name`` exists here and what it needs is installed (no import)."""
    from importlib.util import find_spec

    needs = _SUBPACKAGES[name]
    return find_spec(f"{__name__}.{name}") is not None and (needs is None or find_spec(needs[0]) is not None)


def __getattr__(name: str):
    # The classifier imports scikit-learn when it is installed: load it on first use so that
    # `import bp_gpu` and `bp-gpu info` stay fast.
    if name == "MLPClassifier":
        from .classifier import MLPClassifier

        return MLPClassifier
    if name == "load":
        from .classifier import load

        return load
    if name in _SUBPACKAGES:
        from importlib import import_module
        from importlib.util import find_spec

        if find_spec(f"{__name__}.{name}") is not None:
            needs = _SUBPACKAGES[name]
            try:
                return import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if needs is None or (exc.name or "").split(".")[0] != needs[0]:
                    raise
                raise ModuleNotFoundError(f"bp_gpu.{name} needs {needs[0]}, which is not installed: pip install "
                                          f"'bp_gpu[{needs[1]}]'", name=exc.name) from None
    raise AttributeError(f"module 'bp_gpu' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__ + [n for n in _SUBPACKAGES if _reachable(n)])
