"""bp_gpu: sigmoid multilayer perceptrons trained by backpropagation, on NVIDIA GPUs or any CPU.

The math is the notes' (``shared/seed/backprop_notes.md``); ``bp_gpu.reference`` is it in NumPy.
"""

from ._validate import to_numpy
from .backends import BackendUnavailableError, available_backends
from .mlp import MLP

__version__ = "0.1.0"

__all__ = ["MLP", "BackendUnavailableError", "available_backends", "to_numpy", "__version__"]
