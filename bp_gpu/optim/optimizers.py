"""Optimizers over a network's flat parameter buffer: SGD, Adam, AdamW (PyTorch's rules) and LAMB.

Each is bound to one ``bp_gpu.MLP``: its state (``m``, ``v``) lives on the network's device and the
step count, the hyperparameters and the learning-rate schedule live in a small float64 device
buffer (``bp_gpu.optim.hyper``) that the update kernels read and advance themselves. A step is one
fused launch over every layer (LAMB: two, it needs per-layer norms first) and no host value changes
from step to step, so a step can be captured once and replayed (``MLP.compile_step``).

Weight decay applies to the weight matrices only, never to the biases, for every optimizer (as
scikit-learn's ``alpha``, and as the large-batch recipes that exclude biases from decay).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from . import hyper as H
from .schedules import Schedule, as_schedule


def _real(name: str, value: Any, low: float, high: float = math.inf, *, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < low or value > high or (high_open and value == high):
        hi = "inf" if high == math.inf else f"{high:g}"
        raise ValueError(f"{name} must be in [{low:g}, {hi}{')' if high_open else ']'}; got {value!r}")
    return float(value)


class Optimizer:
    """The state and hyperparameters of one optimizer of one network (a base class: use
    :class:`SGD`, :class:`Adam`, :class:`AdamW` or :class:`LAMB`).

    ``step()`` applies the network's current gradients (from ``net.loss_and_grad`` or the backward
    pass of ``net.train_step``). ``learning_rate`` is a float or a schedule and, like the other
    hyperparameters, may be changed between steps. ``step_count`` and ``last_learning_rate`` read
    the device (a synchronisation): use them outside the training loop's hot path.
    """

    name = "optimizer"
    _state_rows = 0

    def __init__(self, net: Any, learning_rate: float | Schedule, *, weight_decay: float = 0.0) -> None:
        engine = getattr(net, "_engine", None)
        if engine is None:
            raise TypeError(f"{type(self).__name__} needs a bp_gpu.MLP; got {type(net).__name__}")
        self.net = net
        self._engine = engine
        xp, P, rows = engine.xp, engine.n_params, self._state_rows
        # state[0] = m, state[1] = v where the rule has them; a (1, 1) placeholder otherwise (a
        # kernel argument must be an array, and it is never read).
        self.state = xp.zeros((rows, P) if rows else (1, 1), dtype=engine.dtype)
        self.hyper = xp.zeros(H.N_HYPER, dtype=np.float64)
        self._config = np.zeros(H.N_HYPER, dtype=np.float64)
        self._schedule = as_schedule(learning_rate)
        self._learning_rate = learning_rate if isinstance(learning_rate, Schedule) else float(learning_rate)
        self._config[H.WEIGHT_DECAY] = _real("weight_decay", weight_decay, 0.0)
        self._set_schedule(self._schedule)
        self._ops: dict[Any, list[Callable[[], None]]] = {}  # per stream (see Engine.stream_key)

    # -- hyperparameters (written to the device when set, never in a step) ------------------------
    def _set_schedule(self, s: Schedule) -> None:
        self._config[H.SCHEDULE] = s.kind
        self._config[H.LR] = s.peak
        self._config[H.WARMUP] = s.warmup_steps
        self._config[H.TOTAL] = s.total_steps
        self._config[H.FINAL] = s.final
        self._write_config()

    def _write_config(self) -> None:
        xp = self._engine.xp
        self.hyper[H.CONFIG] = xp.asarray(self._config[H.CONFIG])

    @property
    def learning_rate(self) -> float | Schedule:
        """The rate: a float (constant) or a schedule (``bp_gpu.optim.warmup_cosine`` ...)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float | Schedule) -> None:
        self._schedule = as_schedule(value)
        self._learning_rate = value if isinstance(value, Schedule) else float(value)
        self._set_schedule(self._schedule)

    @property
    def schedule(self) -> Schedule:
        """The learning rate as a schedule (``constant(lr)`` for a float)."""
        return self._schedule

    @property
    def weight_decay(self) -> float:
        return float(self._config[H.WEIGHT_DECAY])

    @weight_decay.setter
    def weight_decay(self, value: float) -> None:
        self._config[H.WEIGHT_DECAY] = _real("weight_decay", value, 0.0)
        self._write_config()

    def _read(self, slot: int) -> float:
        from .._validate import to_numpy

        return float(to_numpy(self.hyper[slot : slot + 1])[0])

    @property
    def step_count(self) -> int:
        """Steps taken so far (read from the device)."""
        return int(self._read(H.STEP))

    @property
    def last_learning_rate(self) -> float:
        """The learning rate the last step used (read from the device); 0.0 before the first."""
        return self._read(H.LR_LAST)

    # -- the step -------------------------------------------------------------------------------------
    def _bind(self) -> list[Callable[[], None]]:
        e = self._engine
        op = e.bind("optimizer_update", self._rule, e.params, e.grads, self.state, self.hyper, e.n_weights)
        return [lambda: op(None, None)]

    @property
    def ops(self) -> list[Callable[[], None]]:
        """The prepared calls of one step on the current stream (bound on first use per stream; the
        buffers never move)."""
        key = self._engine.stream_key()
        ops = self._ops.get(key)
        if ops is None:
            ops = self._ops[key] = self._bind()
        return ops

    def step(self) -> None:
        """Apply the network's gradients to its parameters (in place, on its device; no sync)."""
        for op in self.ops:
            op()

    # -- state -----------------------------------------------------------------------------------------
    def device_buffers(self) -> tuple[Any, ...]:
        """(state, hyper), and the network's rounded copy of its weights where it keeps one
        (``bp_gpu.precision``: the step rewrites it with the weights): everything a step changes
        besides the parameters (for snapshots)."""
        copy = self._engine.weight_copy
        return (self.state, self.hyper) if copy is None else (self.state, self.hyper, copy)

    def host_config(self) -> dict[str, Any]:
        """The host's copy of the hyperparameters (what a snapshot restores alongside ``hyper``)."""
        return {"config": self._config.copy(), "learning_rate": self._learning_rate, "schedule": self._schedule}

    def restore_host_config(self, saved: dict[str, Any]) -> None:
        """Undo hyperparameter changes on the host side; the device side comes back with ``hyper``."""
        self._config[...] = saved["config"]
        self._learning_rate, self._schedule = saved["learning_rate"], saved["schedule"]

    def state_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(m, v) as NumPy copies, zero-size where the rule has none (what a model file stores)."""
        from .._validate import to_numpy

        rows = to_numpy(self.state).copy() if self._state_rows else np.zeros((0, 0), self._engine.dtype)
        empty = np.zeros(0, dtype=self._engine.dtype)
        return (rows[0] if self._state_rows >= 1 else empty, rows[1] if self._state_rows >= 2 else empty)

    def load_state(self, m: np.ndarray, v: np.ndarray, step_count: int) -> None:
        """Restore what :meth:`state_arrays` and :attr:`step_count` returned; shapes must match."""
        P = self._engine.n_params
        want = {"m": (P,) if self._state_rows >= 1 else (0,), "v": (P,) if self._state_rows >= 2 else (0,)}
        for name, arr in (("m", m), ("v", v)):
            if tuple(np.shape(arr)) != want[name]:
                raise ValueError(f"optimizer state {name} has shape {tuple(np.shape(arr))}; a {self.name!r} "
                                 f"optimizer for {P} parameters needs {want[name]}")
        if isinstance(step_count, bool) or int(step_count) != step_count or step_count < 0:
            raise ValueError(f"optimizer step count must be an int >= 0; got {step_count!r}")
        xp = self._engine.xp
        if self._state_rows:
            rows = np.stack([np.asarray(m), np.asarray(v)][: self._state_rows]).astype(self._engine.dtype)
            self.state[...] = xp.asarray(rows)
        self.hyper[H.STEP : H.STEP + 1] = xp.asarray(np.array([float(step_count)]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self._learning_rate!r}, weight_decay={self.weight_decay!r})"


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD`` (dampening 0, not Nesterov):
    ``g = grad + weight_decay * w``; without momentum ``p -= lr g``; with it ``m = momentum m + g``,
    ``p -= lr m``. ``momentum`` cannot change between zero and non-zero after construction (a
    momentum buffer exists only when it is non-zero)."""

    name = "sgd"

    def __init__(self, net: Any, learning_rate: float | Schedule, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        momentum = _real("momentum", momentum, 0.0, 1.0, high_open=True)
        self._state_rows = 1 if momentum > 0 else 0
        self._rule = H.MOMENTUM if momentum > 0 else H.SGD
        super().__init__(net, learning_rate, weight_decay=weight_decay)
        self.momentum = momentum

    @property
    def momentum(self) -> float:
        return float(self._config[H.BETA1])

    @momentum.setter
    def momentum(self, value: float) -> None:
        value = _real("momentum", value, 0.0, 1.0, high_open=True)
        if (value > 0) != (self._rule == H.MOMENTUM):
            raise ValueError("momentum cannot change between 0 and non-zero on an existing SGD optimizer "
                             "(its momentum buffer exists only for non-zero momentum); create a new one")
        self._config[H.BETA1] = value
        self._write_config()

    def __repr__(self) -> str:
        return (f"SGD(learning_rate={self._learning_rate!r}, momentum={self.momentum!r}, "
                f"weight_decay={self.weight_decay!r})")


class _AdamBase(Optimizer):
    _state_rows = 2

    def __init__(self, net: Any, learning_rate: float | Schedule, betas: tuple[float, float], eps: float,
                 weight_decay: float) -> None:
        super().__init__(net, learning_rate, weight_decay=weight_decay)
        self.betas = betas
        self.eps = eps

    @property
    def betas(self) -> tuple[float, float]:
        return float(self._config[H.BETA1]), float(self._config[H.BETA2])

    @betas.setter
    def betas(self, value: tuple[float, float]) -> None:
        if not hasattr(value, "__len__") or len(value) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {value!r}")
        self._config[H.BETA1] = _real("betas[0]", value[0], 0.0, 1.0, high_open=True)
        self._config[H.BETA2] = _real("betas[1]", value[1], 0.0, 1.0, high_open=True)
        self._write_config()

    @property
    def eps(self) -> float:
        return float(self._config[H.EPS])

    @eps.setter
    def eps(self, value: float) -> None:
        eps = _real("eps", value, 0.0)
        if eps == 0:
            raise ValueError("eps must be > 0")
        self._config[H.EPS] = eps
        self._write_config()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(learning_rate={self._learning_rate!r}, betas={self.betas!r}, "
                f"eps={self.eps!r}, weight_decay={self.weight_decay!r})")


class Adam(_AdamBase):
    """Adam, as ``torch.optim.Adam``: weight decay is L2 added to the gradient
    (``g = grad + weight_decay * w``); ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""

    name = "adam"
    _rule = H.ADAM

    def __init__(self, net: Any, learning_rate: float | Schedule, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(net, learning_rate, betas, eps, weight_decay)


class AdamW(_AdamBase):
    """AdamW, as ``torch.optim.AdamW``: decoupled weight decay ``w *= 1 - lr * weight_decay``, then
    Adam's update on the plain gradient. (PyTorch's default decay is 0.01; here it is 0.0 like the
    other optimizers: pass it explicitly.)"""

    name = "adamw"
    _rule = H.ADAMW

    def __init__(self, net: Any, learning_rate: float | Schedule, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(net, learning_rate, betas, eps, weight_decay)


class LAMB(_AdamBase):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2): Adam's
    direction with decoupled weight decay, scaled per layer by the trust ratio.

    ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``; ``r = (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
    + weight_decay * w``; for each layer ``k``: ``w_k -= lr * (||w_k|| / ||r_k||) * r_k``, the ratio
    taken as 1 where either norm is 0.

    Layers: every weight matrix and every bias vector has its own trust ratio, as NVIDIA's and
    TensorFlow's LAMB treat each parameter tensor: a bias vector's norm is unrelated to its
    layer's weights' (and starts at 0, where the ratio is 1, so biases first move at Adam's rate).
    Weight decay applies to the weight matrices only, as everywhere in bp_gpu and as the BERT
    recipe LAMB was published with (which excludes biases from decay).

    A step is two launches: moments and per-layer norms (a deterministic two-level reduction whose
    last block writes the ratios), then the update.
    """

    name = "lamb"

    def __init__(self, net: Any, learning_rate: float | Schedule, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(net, learning_rate, betas, eps, weight_decay)

    def _bind(self) -> list[Callable[[], None]]:
        e = self._engine
        op = e.bind("lamb_update", e.params, e.grads, self.state, self.hyper, e.n_weights, e.segments)
        return [lambda: op(None, None)]


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "lamb": LAMB}
