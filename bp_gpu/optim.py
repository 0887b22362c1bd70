"""Optimizers over the engine's flat parameter buffer: PyTorch-style SGD, momentum and Adam.

The math lives in the backend's ``optimizer_update`` step (see ``bp_gpu.steps_numpy``): one call
updates every layer. This module keeps what the step needs besides the buffers: the state ``m``
(momentum, Adam's first moment) and ``v`` (Adam's second moment) on the device, and the step
counter and Adam's bias corrections ``1 - beta^t`` on the host, so a step never waits on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .steps_numpy import OPTIMIZER_CODES

OPTIMIZERS = tuple(OPTIMIZER_CODES)

# Adam's constants: PyTorch's and scikit-learn's defaults.
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


class Optimizer:
    """Optimizer state for one engine.

    ``kind`` is ``"sgd"`` (p -= lr g), ``"momentum"`` (m = momentum m + g; p -= lr m: PyTorch's
    SGD with momentum and dampening 0, the same as scikit-learn's non-Nesterov momentum with a
    constant rate) or ``"adam"``; ``g`` is the gradient plus ``weight_decay * p`` on weights only
    (L2, not on biases). ``m``/``v`` are zero-size when the kind does not use them.
    """

    def __init__(
        self,
        engine: Any,
        kind: str,
        learning_rate: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if kind not in OPTIMIZER_CODES:
            raise ValueError(
                f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}; got {kind!r}"
            )
        self.engine = engine
        self.kind = kind
        self.code = OPTIMIZER_CODES[kind]
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.step_count = 0
        xp, p = engine.xp, engine.params
        empty = xp.zeros(0, dtype=p.dtype)
        self.m = xp.zeros_like(p) if kind in ("momentum", "adam") else empty  # (P,) or (0,)
        self.v = xp.zeros_like(p) if kind == "adam" else empty  # (P,) or (0,)

    def step(self) -> None:
        """Apply ``engine.grads`` to ``engine.params`` (in place, on the engine's device)."""
        self.step_count += 1
        t = self.step_count
        # Host floats: the bias corrections of step t, computed without touching the device.
        bc1 = 1.0 - ADAM_BETA1**t
        bc2 = 1.0 - ADAM_BETA2**t
        e = self.engine
        e.steps.optimizer_update(
            self.code,
            e.params,
            e.grads,
            self.m,
            self.v,
            e.n_weights,
            self.learning_rate,
            self.momentum,
            self.weight_decay,
            ADAM_BETA1,
            ADAM_BETA2,
            ADAM_EPS,
            bc1,
            bc2,
        )

    def state_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(m, v)`` as NumPy copies (what a checkpoint stores)."""
        from ._validate import to_numpy

        return to_numpy(self.m).copy(), to_numpy(self.v).copy()

    def load_state(self, m: np.ndarray, v: np.ndarray, step_count: int) -> None:
        """Restore state saved by :meth:`state_arrays`; shapes must match this optimizer's."""
        for name, dst, src in (("m", self.m, m), ("v", self.v, v)):
            if tuple(np.shape(src)) != tuple(dst.shape):
                raise ValueError(
                    f"optimizer state {name} has shape {tuple(np.shape(src))}; a {self.kind!r} optimizer "
                    f"for {self.engine.n_params} parameters needs {tuple(dst.shape)}"
                )
        if int(step_count) < 0:
            raise ValueError(f"optimizer step count must be >= 0; got {step_count}")
        xp = self.engine.xp
        self.m[...] = xp.asarray(np.asarray(m, dtype=self.m.dtype))
        self.v[...] = xp.asarray(np.asarray(v, dtype=self.v.dtype))
        self.step_count = int(step_count)
