"""The CPU backend's fused steps (same signatures as ``bp_gpu.steps_numpy``).

For now these are the NumPy reference steps themselves.
"""

from .steps_numpy import (  # noqa: F401
    bias_sigmoid_forward,
    optimizer_update,
    output_loss_delta,
    sigmoid_delta_backward,
)
