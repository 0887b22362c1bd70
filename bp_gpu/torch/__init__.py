"""bp_gpu inside PyTorch: ``SigmoidMLP``, an ``nn.Module`` whose forward and backward are bp_gpu's steps.

Needs PyTorch (``pip install 'bp_gpu[torch]'``). See ``SigmoidMLP`` and the README's "Inside
PyTorch" section.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"bp_gpu.torch needs PyTorch, which is not importable ({exc}); install it with: pip install 'bp_gpu[torch]'"
    ) from exc

from .module import SigmoidMLP

__all__ = ["SigmoidMLP"]
