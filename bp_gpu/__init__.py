"""bp_gpu: sigmoid multilayer perceptrons trained by backpropagation, on NVIDIA GPUs or any CPU.

The math is in ``docs/math.md`` of the repository; ``bp_gpu.reference`` is it in NumPy.
"""

from ._validate import to_numpy
from ._version import __version__
from .backends import BackendUnavailableError, available_backends
from .mlp import MLP

__all__ = ["MLP", "MLPClassifier", "BackendUnavailableError", "available_backends", "load", "to_numpy",
           "__version__"]


def __getattr__(name: str):
    # The classifier imports scikit-learn when it is installed: load it on first use so that
    # `import bp_gpu` and `bp-gpu info` stay fast.
    if name == "MLPClassifier":
        from .classifier import MLPClassifier

        return MLPClassifier
    if name == "load":
        from .classifier import load

        return load
    raise AttributeError(f"module 'bp_gpu' has no attribute {name!r}")
