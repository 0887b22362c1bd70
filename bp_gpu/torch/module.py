"""``SigmoidMLP``: a sigmoid MLP as a PyTorch ``nn.Module`` whose forward and backward are bp_gpu's steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..mlp import _check_layer_sizes, glorot_weights
from ..precision import check_precision as _check_precision
from .function import SigmoidMLPFunction

DTYPES = (torch.float32, torch.float64)


def check_precision(precision: Any, dtype: torch.dtype) -> str:
    """``precision`` as one of ``bp_gpu.precision.PRECISIONS``, checked against the parameters'
    ``dtype`` (``"tf32"``/``"bf16"`` need float32: float32 master weights); a ValueError says why."""
    return _check_precision(precision, str(dtype).removeprefix("torch."))


def _apply(precision: str, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    return SigmoidMLPFunction.apply(precision, x, *params)


# torch.compile: Dynamo cannot trace the Numba and CuPy calls inside the Function (left to itself, it
# inlines the Function's forward into Numba's dispatcher and fails), so it is told not to try: a
# compiled model breaks its graph here, runs this eagerly (forward, and backward through autograd),
# and compiles what comes before and after (torch.compiler.disable, among the "fine-grained tracing"
# APIs of the PyTorch docs). It imports torch._dynamo, which the first torch.optim step imports anyway.
_apply_eager = torch.compiler.disable(_apply, reason="bp_gpu's steps run Numba and CuPy code")


class SigmoidMLP(nn.Module):
    """A sigmoid MLP ``[N_0, ..., N_L]`` whose forward and backward run bp_gpu's fused steps.

    ``forward(x)`` maps ``x`` of shape ``(*, N_0)`` to the output layer's logits ``a_out`` of shape
    ``(*, N_L)``: every hidden unit is sigmoid and the output is left to the loss, e.g.
    ``nn.BCEWithLogitsLoss`` / ``F.binary_cross_entropy_with_logits`` (the stable form).
    ``torch.sigmoid(a_out)`` is the notes' ``y = sigma(a_out)`` with ``positive_class=1``: the
    probability of label 1, the output of ``bp_gpu.MLP(..., positive_class=1).predict_proba``.

    Parameters ``W_1, b_1, ..., W_L, b_L`` (in that order) are ``nn.Parameter``\\s shaped like
    ``nn.Linear``'s ``weight`` ``(N_l, N_{l-1})`` and ``bias`` ``(N_l,)``: ``torch.optim``,
    schedulers, gradient clipping, ``DistributedDataParallel`` and ``state_dict()`` work as with
    ``nn.Linear`` layers. The steps read them in place (a NumPy or CuPy view of their memory), so
    nothing is copied per call. Gradients reach ``.grad`` through autograd: the backward (bp_gpu's
    sigmoid-delta steps and GEMMs, the bias gradients as column sums) returns them, for ``x`` too
    when ``x.requires_grad``. Activations are saved per call, so several forwards may be pending
    before their backwards. CPU tensors run on the CPU backend, CUDA tensors on the CUDA backend on
    PyTorch's current stream; nothing waits on the device.

    Args:
        layer_sizes: ``[N_0, ..., N_L]``, at least two entries, each ``>= 1``.
        dtype: ``torch.float32`` or ``torch.float64``.
        device: where the parameters live (default: PyTorch's default device).
        seed: seed (or ``numpy.random.Generator``) of the initial weights: the same seed draws the
            same weights as ``bp_gpu.MLP(layer_sizes, seed=seed)`` (Glorot-uniform, biases 0).
            ``None``: a seed drawn from PyTorch's default generator, so ``torch.manual_seed`` makes
            the initialisation reproducible as it does for ``nn.Linear``.
        precision: ``"highest"``: every product in ``dtype``; ``"tf32"`` / ``"bf16"``: every GEMM's
            operands rounded to TF32 / bfloat16, products summed in float32 (the tensor cores on a
            GPU; on the CPU an exact reference), everything else float32: bp_gpu's rounding contract
            (docs/math.md, ``bp_gpu.MLP(precision=...)``); they need ``dtype=torch.float32``.

    Under ``torch.compile`` the module is a graph break: it runs eagerly, the layers around it
    are compiled. ``torch.autograd.gradcheck`` passes in float64 (first derivatives: the backward
    is not itself differentiable, ``once_differentiable``).
    """

    def __init__(self, layer_sizes: Sequence[int], *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, seed: Any = None, precision: str = "highest") -> None:
        super().__init__()
        sizes = _check_layer_sizes(layer_sizes)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype!r}")
        self.layer_sizes: tuple[int, ...] = sizes
        self.precision: str = check_precision(precision, dtype)
        if seed is None:
            seed = int(torch.randint(2**63 - 1, (), dtype=torch.int64))
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        for l, (W, b) in enumerate(glorot_weights(sizes, seed, np_dtype), start=1):
            for name, value in ((f"W_{l}", W), (f"b_{l}", b)):
                p = nn.Parameter(torch.empty(value.shape, dtype=dtype, device=device))
                with torch.no_grad():
                    p.copy_(torch.from_numpy(value))
                self.register_parameter(name, p)
        self._names = [f"{k}_{l}" for l in range(1, len(sizes)) for k in ("W", "b")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``a_out`` ``(*, N_L)`` of ``x`` ``(*, N_0)``."""
        params = [getattr(self, name) for name in self._names]
        self._check(x, params)
        # The steps need C-contiguous parameters; the copy of one that is not (a transposed or
        # strided view someone assigned) is made here, where autograd sees it.
        params = [p if p.is_contiguous() else p.contiguous() for p in params]
        n_in, n_out = self.layer_sizes[0], self.layer_sizes[-1]
        if x.dim() == 2:
            return _apply_eager(self.precision, x if x.is_contiguous() else x.contiguous(), params)
        lead = x.shape[:-1]
        return _apply_eager(self.precision, x.reshape(-1, n_in).contiguous(), params).reshape(*lead, n_out)

    def _check(self, x: Any, params: list[torch.Tensor]) -> None:
        """ValueError naming both sides when x or the parameters cannot be computed with."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SigmoidMLP's input must be a torch.Tensor; got {type(x).__name__}")
        p0 = params[0]
        for name, p in zip(self._names, params):
            if p.dtype not in DTYPES:
                raise ValueError(f"SigmoidMLP's parameter {name} is {p.dtype}; it computes in torch.float32 or "
                                 "torch.float64 (convert the module with .float() or .double())")
            if p.dtype != p0.dtype or p.device != p0.device:
                raise ValueError(f"SigmoidMLP's parameters disagree: {name} is {p.dtype} on {p.device}, "
                                 f"W_1 is {p0.dtype} on {p0.device}")
        if p0.device.type not in ("cpu", "cuda"):
            raise ValueError(f"SigmoidMLP runs on CPU and CUDA tensors; its parameters are on {p0.device}")
        if x.dim() == 0 or x.shape[-1] != self.layer_sizes[0]:
            got = "a 0-d tensor" if x.dim() == 0 else f"{x.shape[-1]} features (x.shape = {tuple(x.shape)})"
            raise ValueError(f"x has {got} but SigmoidMLP expects {self.layer_sizes[0]} (layer_sizes[0])")
        if x.dtype != p0.dtype:
            hint = (" (torch.autocast does not cast SigmoidMLP's input: pass x.float())"
                    if x.dtype in (torch.float16, torch.bfloat16) else "")
            raise ValueError(f"x is {x.dtype} but SigmoidMLP's parameters are {p0.dtype}; convert one to the "
                             f"other (x.to({p0.dtype}) or the module's .to({x.dtype})){hint}")
        if x.device != p0.device:
            raise ValueError(f"x is on {x.device} but SigmoidMLP's parameters are on {p0.device}; move one to "
                             f"the other (x.to('{p0.device}') or the module's .to('{x.device}'))")

    # -- conversions ----------------------------------------------------------------------------
    def to_torch(self) -> nn.Sequential:
        """An equivalent ``nn.Sequential(Linear, Sigmoid, ..., Linear)`` (no sigmoid after the last
        Linear: it returns the same logits) with copies of the weights, on the same device and dtype."""
        layers: list[nn.Module] = []
        for l, (n_in, n_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:]), start=1):
            W = getattr(self, f"W_{l}")
            lin = nn.Linear(n_in, n_out, dtype=W.dtype, device=W.device)
            with torch.no_grad():
                lin.weight.copy_(W)
                lin.bias.copy_(getattr(self, f"b_{l}"))
            layers += [lin, nn.Sigmoid()]
        return nn.Sequential(*layers[:-1])

    @classmethod
    def from_torch(cls, seq: nn.Module, *, precision: str = "highest") -> SigmoidMLP:
        """A ``SigmoidMLP`` with copies of the weights of ``nn.Sequential(Linear, Sigmoid, ..., Linear)``
        (``to_torch``'s form: Linear layers with biases, a Sigmoid between each two, a Linear last),
        on its device and dtype. Anything else is refused with a ValueError saying what and where."""
        if not isinstance(seq, nn.Sequential):
            raise ValueError(f"from_torch needs an nn.Sequential of Linear and Sigmoid layers; "
                             f"got {type(seq).__name__}")
        mods = list(seq)
        if not mods:
            raise ValueError("from_torch: the nn.Sequential is empty; it needs at least one Linear layer")
        linears = []
        for i, m in enumerate(mods):
            want = nn.Linear if i % 2 == 0 else nn.Sigmoid
            if type(m) is not want:
                raise ValueError(f"from_torch: layer {i} is {type(m).__name__}, expected {want.__name__} "
                                 "(Linear and Sigmoid alternate, starting and ending with Linear)")
            if want is nn.Linear:
                if m.bias is None:
                    raise ValueError(f"from_torch: layer {i} (Linear) has no bias; SigmoidMLP's layers all have one")
                if linears and m.in_features != linears[-1].out_features:
                    raise ValueError(f"from_torch: layer {i} (Linear) takes {m.in_features} inputs but the Linear "
                                     f"before it gives {linears[-1].out_features}")
                linears.append(m)
        if type(mods[-1]) is not nn.Linear:
            raise ValueError(f"from_torch: the last layer ({len(mods) - 1}) is Sigmoid; it must be Linear "
                             "(SigmoidMLP returns logits: the loss applies the output's sigmoid)")
        W0 = linears[0].weight
        if W0.dtype not in DTYPES:
            raise ValueError(f"from_torch: the Linear layers are {W0.dtype}; SigmoidMLP computes in torch.float32 "
                             "or torch.float64 (convert with .float() or .double() first)")
        for i, lin in zip(range(0, len(mods), 2), linears):
            for p in (lin.weight, lin.bias):
                if p.dtype != W0.dtype or p.device != W0.device:
                    raise ValueError(f"from_torch: layer {i}'s parameters are {p.dtype} on {p.device}, layer 0's "
                                     f"weight is {W0.dtype} on {W0.device}; they must agree")
        sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
        m = cls(sizes, dtype=W0.dtype, device=W0.device, seed=0, precision=precision)
        with torch.no_grad():
            for l, lin in enumerate(linears, start=1):
                getattr(m, f"W_{l}").copy_(lin.weight)
                getattr(m, f"b_{l}").copy_(lin.bias)
        return m

    def extra_repr(self) -> str:
        return f"layer_sizes={list(self.layer_sizes)}, precision={self.precision!r}"
