"""``bp_gpu.optim``: optimizers over a network's flat parameters, and learning-rate schedules.

```python
net = bp_gpu.MLP([784, 1024, 1024, 10], backend="cuda", seed=0)
opt = bp_gpu.optim.LAMB(net, learning_rate=bp_gpu.optim.warmup_cosine(2e-3, warmup_steps=500, total_steps=20_000),
                        weight_decay=0.01)
loss = net.train_step(X, t, opt)
```

- :class:`SGD` (with momentum), :class:`Adam`, :class:`AdamW`: PyTorch's update rules, one fused
  launch over every layer; :class:`LAMB`: two launches (per-layer norms, then the update).
- :func:`constant`, :func:`warmup_cosine`, :func:`warmup_linear`: schedules, pure functions of the
  step number (``schedule(t)`` on the host runs the formula the kernels run).
"""

from .optimizers import LAMB, OPTIMIZERS, SGD, Adam, AdamW, Optimizer
from .schedules import Schedule, constant, warmup_cosine, warmup_linear

__all__ = ["SGD", "Adam", "AdamW", "LAMB", "Optimizer", "OPTIMIZERS", "Schedule", "constant", "warmup_cosine",
           "warmup_linear"]
