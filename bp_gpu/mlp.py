"""``bp_gpu.MLP``: a sigmoid multilayer perceptron, its loss and its gradient, on any backend."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _validate as V
from .backends import resolve_backend
from .plan import run
from .precision import check_precision

DTYPES = ("float32", "float64")


def _check_layer_sizes(layer_sizes: Any) -> tuple[int, ...]:
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(f"layer_sizes must be a sequence of ints [N_0, ..., N_L]; got {layer_sizes!r}")
    sizes = []
    for k, n in enumerate(layer_sizes):
        try:
            n_int = operator.index(n)
        except TypeError:
            raise TypeError(f"layer_sizes[{k}] must be an int; got {n!r}") from None
        if n_int < 1:
            raise ValueError(f"layer_sizes[{k}] must be >= 1; got {n_int}")
        sizes.append(int(n_int))
    if len(sizes) < 2:
        raise ValueError(
            f"layer_sizes needs at least 2 entries (inputs and outputs); got {list(layer_sizes)!r}"
        )
    return tuple(sizes)


def glorot_weights(layer_sizes: Sequence[int], seed: Any, dtype: np.dtype,
                   positive_class: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Initial weights, drawn on the host so every backend starts from the same numbers.

    W ~ U(-r, r) with r = sqrt(2 / (fan_in + fan_out)), the Glorot bound scikit-learn uses for
    logistic units; biases start at 0. With ``positive_class=0`` the output layer is negated: the
    two conventions are then mirror images from the first step (the loss of one at (W_L, b_L) is
    the loss of the other at (-W_L, -b_L), and every optimizer keeps the mirror), so the same seed
    trains to the same predictions either way (docs/math.md).
    """
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        r = np.sqrt(2.0 / (fan_in + fan_out))
        W = rng.uniform(-r, r, size=(fan_out, fan_in)).astype(dtype)
        weights.append((W, np.zeros(fan_out, dtype=dtype)))
    if positive_class == 0:
        weights[-1] = (-weights[-1][0], weights[-1][1])
    return weights


def make_engine(backend: str, layer_sizes: tuple[int, ...], dtype: np.dtype, precision: str = "highest") -> Any:
    """A fresh ``Engine`` (``bp_gpu.engine``) for an already resolved backend name (``precision``: see
    ``bp_gpu.precision``)."""
    from .engine import Engine

    if backend == "cpu":
        from .cpu_backend import CPU_STEPS

        return Engine(np, CPU_STEPS, layer_sizes, dtype, "cpu", precision)
    from .cuda_host import make_cuda_engine  # CuPy and the kernels load only for backend="cuda"

    return make_cuda_engine(layer_sizes, dtype, precision)


class MLP:
    """A sigmoid MLP ``[N_0, N_1, ..., N_L]``: every unit, the outputs included, is sigmoid.

    Parameters
    ----------
    layer_sizes:
        ``[N_0, ..., N_L]``: inputs, hidden widths, and ``N_L >= 1`` sigmoid outputs.
    positive_class:
        The output ``y = sigma(a_out)`` models ``p(t = positive_class | x)``. ``0`` is the notes'
        convention (``L = -(1-t) log y - t log(1-y)``, ``delta_out = sigma(a_out) - (1-t)``); ``1``
        (default) the usual one (``L = -t log y - (1-t) log(1-y)``, ``delta_out = sigma(a_out) - t``).
    dtype:
        ``"float32"`` or ``"float64"``: parameters, activations and gradients.
    precision:
        How the GEMMs treat their operands (docs/math.md, "Mixed precision"): ``"highest"``
        (default) multiplies the values of ``dtype`` as they are; ``"tf32"`` rounds every GEMM operand
        to TF32 and ``"bf16"`` to bfloat16, the products accumulated in float32 (tensor cores on a
        GPU), everything else (activations, deltas, weights, optimizer state) float32. Both need
        ``dtype="float32"``. The CPU backend computes the same roundings: a reference, not a speed mode.
    backend:
        ``"auto"`` (best usable), ``"cpu"`` or ``"cuda"``; ``"cuda"`` raises
        ``BackendUnavailableError`` with the reason when it cannot run here.
    seed:
        Seed (or ``numpy.random.Generator``) for the initial weights, drawn with NumPy on the host:
        the same seed gives the same weights on every backend (and mirror-image output layers for
        the two conventions, see ``glorot_weights``).

    Inputs: NumPy and CuPy arrays and any DLPack producer (PyTorch tensors, JAX arrays). An input
    already on the backend's device, of the network's dtype and C-contiguous, is used in place;
    anything else is converted once.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        *,
        positive_class: int = 1,
        dtype: str = "float32",
        precision: str = "highest",
        backend: str = "auto",
        seed: Any = None,
    ) -> None:
        sizes = _check_layer_sizes(layer_sizes)
        if isinstance(positive_class, bool) or positive_class not in (0, 1):
            raise ValueError(f"positive_class must be 0 or 1; got {positive_class!r}")
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt is None or dt.name not in DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
        self.precision: str = check_precision(precision, dt)
        self.layer_sizes: tuple[int, ...] = sizes
        self.positive_class: int = int(positive_class)
        self.dtype: np.dtype = dt
        self.backend: str = resolve_backend(backend)
        self._engine = make_engine(self.backend, sizes, self.dtype, self.precision)
        self._write_weights(glorot_weights(sizes, seed, self.dtype, self.positive_class))

    # -- parameters ---------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Number of trainable parameters (weights and biases)."""
        return self._engine.n_params

    def get_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """NumPy copies of ``(W, b)`` per layer: ``W[i, j] = w_ij^(l)`` of shape ``(N_l, N_{l-1})``,
        ``b[i] = w_i0^(l)`` of shape ``(N_l,)``."""
        return [(V.to_numpy(W).copy(), V.to_numpy(b).copy()) for W, b in self._engine.layers]

    def set_weights(self, weights: Sequence[tuple[Any, Any]]) -> None:
        """Replace every ``(W, b)``; all are checked first, so a rejected call changes nothing."""
        if not hasattr(weights, "__len__") or len(weights) != len(self._engine.shapes):
            n = len(weights) if hasattr(weights, "__len__") else "a non-sequence"
            raise ValueError(f"weights must be a list of {len(self._engine.shapes)} (W, b) pairs; got {n}")
        checked = []
        for l, (pair, (o, i)) in enumerate(zip(weights, self._engine.shapes)):
            if not hasattr(pair, "__len__") or len(pair) != 2:
                raise ValueError(f"weights[{l}] must be a (W, b) pair")
            W = V.numeric(V.to_numpy(pair[0]), f"weights[{l}][0] (W)")
            b = V.numeric(V.to_numpy(pair[1]), f"weights[{l}][1] (b)")
            if W.shape != (o, i):
                raise ValueError(f"weights[{l}][0] (W) must have shape {(o, i)} (N_{l + 1}, N_{l}); got {W.shape}")
            if b.shape != (o,):
                raise ValueError(f"weights[{l}][1] (b) must have shape {(o,)}; got {b.shape}")
            V._check_finite(W, f"weights[{l}][0]")
            V._check_finite(b, f"weights[{l}][1]")
            checked.append((W, b))
        self._write_weights(checked)

    def _write_weights(self, weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        xp = self._engine.xp
        for (W_dst, b_dst), (W, b) in zip(self._engine.layers, weights):
            W_dst[...] = xp.asarray(np.asarray(W, dtype=self.dtype))
            b_dst[...] = xp.asarray(np.asarray(b, dtype=self.dtype))
        self._engine.refresh_weight_copies()

    # -- computations ----------------------------------------------------------------------------
    def _inputs(self, X: Any, t: Any = None, values: bool | None = True) -> tuple[Any, Any]:
        xp = self._engine.xp
        Xc = V.check_features(X, self.layer_sizes[0], self.dtype, xp, values=values)
        tc = None if t is None else V.check_targets(t, Xc.shape[0], self.layer_sizes[-1], self.dtype, xp,
                                                     values=values)
        return Xc, tc

    def predict_proba(self, X: Any) -> Any:
        """``y = sigma(a_out)`` of shape ``(n, N_L)``: ``p(t = positive_class | x)`` per output.

        Returns a CuPy array for device input (CuPy, or a DLPack producer on the GPU) on the CUDA
        backend, else a NumPy array.
        """
        Xc, _ = self._inputs(X)
        y = self._engine.predict_proba(Xc)
        on_device = V.array_module(X) is not np or V._device_type(X) not in (None, 1, 3)
        return y if on_device and self.backend == "cuda" else V.to_numpy(y)

    def loss(self, X: Any, t: Any, reduction: str = "mean") -> float:
        """The loss summed over output units, then averaged (``"mean"``) or summed over samples."""
        V.check_reduction(reduction)
        Xc, tc = self._inputs(X, t)
        scale = 1.0 / Xc.shape[0] if reduction == "mean" else 1.0
        return float(V.to_numpy(self._engine.loss(Xc, tc, self.positive_class, scale))[0])

    def loss_and_grad(
        self, X: Any, t: Any, reduction: str = "mean"
    ) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """``(loss, [(dW, db), ...])``: the loss of :meth:`loss` and its gradient, as NumPy copies.

        ``dW[i, j] = sum_n delta_i z_j`` and ``db[i] = sum_n delta_i`` (the notes' step 4), times
        1/n for ``"mean"``.
        """
        V.check_reduction(reduction)
        Xc, tc = self._inputs(X, t)
        scale = 1.0 / Xc.shape[0] if reduction == "mean" else 1.0
        loss = float(V.to_numpy(self._engine.loss_and_grad(Xc, tc, self.positive_class, scale))[0])
        grads = [(V.to_numpy(dW).copy(), V.to_numpy(db).copy()) for dW, db in self._engine.grad_layers]
        return loss, grads

    # -- training ---------------------------------------------------------------------------------
    def _check_optimizer(self, optimizer: Any) -> None:
        if getattr(optimizer, "net", None) is not self:
            what = type(optimizer).__name__
            raise ValueError(
                f"optimizer ({what}) was not created for this network; create it with this one, e.g. "
                f"bp_gpu.optim.Adam(net, learning_rate=1e-3)"
            )

    def _step(self, X: Any, T: Any, optimizer: Any, scale: float, reduce_grads: Any = None,
              staged: bool = False) -> None:
        """One training step on checked inputs: forward, backward, (``reduce_grads()``: e.g. the
        all-reduce of data-parallel training), optimizer update. Nothing waits on the device.
        ``staged``: X is the engine's rounded batch copy, filled by ``Engine.stage_rows``."""
        e = self._engine
        B = X.shape[0]
        e._prepare(B)
        run(e.grad_plan(B, scale, self.positive_class, staged=staged), X, T)
        if reduce_grads is not None:
            reduce_grads()
        optimizer.step()

    def train_step(self, X: Any, t: Any, optimizer: Any, reduction: str = "mean", *,
                   check_values: bool | None = None) -> Any:
        """Forward, backward and one optimizer step on the batch (X, t); returns its loss.

        The loss (before the update, the same as :meth:`loss_and_grad`'s) comes back as a 0-d array
        on the backend's device (NumPy on cpu, CuPy on cuda), a fresh copy each step; nothing waits
        on the device, so reading it (``float(loss)``) is the only synchronisation. ``optimizer`` is
        a ``bp_gpu.optim`` optimizer created for this network. Bad input raises the errors of
        :meth:`loss_and_grad` and changes nothing. ``check_values``: whether to check that X is
        finite and t holds only 0 and 1; by default only for host inputs (for device inputs that
        check would wait on the device every step). The gradients stay available through
        :meth:`gradients`.
        """
        V.check_reduction(reduction)
        self._check_optimizer(optimizer)
        Xc, tc = self._inputs(X, t, check_values)
        self._step(Xc, tc, optimizer, 1.0 / Xc.shape[0] if reduction == "mean" else 1.0)
        return self._engine.loss_view.copy()

    def gradients(self) -> list[tuple[Any, Any]]:
        """The gradients of the last ``train_step``/``loss_and_grad`` as ``[(dW, db), ...]`` views on
        the backend's device: no copy, and overwritten by the next step."""
        return list(self._engine.grad_layers)

    def compile_step(self, optimizer: Any, batch_size: int, reduction: str = "mean") -> Any:
        """A step recorded once and replayed: ``step = net.compile_step(opt, 512); loss = step(X, t)``.

        ``step(X, t)`` copies a batch of exactly ``batch_size`` rows into fixed buffers and runs the
        recorded step: on CUDA a CUDA graph captured once and replayed (a few microseconds of host
        time instead of one launch per kernel), on the CPU the recorded calls. K calls give the
        same parameters, bit for bit, as K ``train_step`` calls. See ``bp_gpu.compiled_step``.
        """
        from .compiled_step import CompiledStep

        V.check_reduction(reduction)
        self._check_optimizer(optimizer)
        return CompiledStep(self, optimizer, batch_size, reduction)

    def __repr__(self) -> str:
        precision = "" if self.precision == "highest" else f", precision='{self.precision}'"
        return (
            f"MLP({list(self.layer_sizes)}, positive_class={self.positive_class}, "
            f"dtype='{self.dtype.name}'{precision}, backend='{self.backend}')"
        )
