"""The network's forward and backward as two separate calls, into buffers the caller owns.

What an autograd framework needs (``bp_gpu.torch``): the forward of a batch returns the output
logits and leaves the hidden activations in the caller's buffers; the backward, called later (after
other forwards, possibly), takes the gradient of the loss with respect to those logits from the
framework and fills the caller's gradient buffers. The engine (``bp_gpu.engine``) cannot do this: it
keeps one set of activation buffers per network and runs forward, loss and backward as one plan.

The calls are the engine's: GEMMs and fused steps of a backend's steps object
(``bp_gpu.cpu_backend.CPU_STEPS``, ``bp_gpu.cuda_host.CUDA_STEPS``), bound for this call's arrays
and run at once. What the engine fuses into its output step (``output_loss_delta``: bias, loss and
delta) is split here, since the loss belongs to the framework: the output bias is one broadcast add
and its gradient one column sum, by the arrays' own library.

Shapes: ``B`` batch rows, ``N_l`` units of layer l, ``L`` layers; ``layers[l] = (W (N_{l+1}, N_l),
b (N_{l+1},))`` with 0-based l (the notes' layer l + 1). Every buffer is C-contiguous.

Math (docs/math.md): forward ``Z_l = sigma(Z_{l-1} W_l^T + b_l)`` for the hidden layers and
``A = Z_{L-1} W_L^T + b_L``; backward from ``D_L = dLoss/dA``: ``dW_l = D_l^T Z_{l-1}``,
``db_l = sum_rows D_l``, ``D_{l-1} = (D_l W_l) * Z_{l-1} (1 - Z_{l-1})``, and ``dX = D_1 W_1``.

Mixed precision (``precision="tf32"``/``"bf16"``, docs/math.md's rounding contract): every GEMM
reads its operands rounded, ``r(a) r(b)`` with float32 products and sums; everything else (the bias,
the sigmoid, ``z (1 - z)`` from the float32 ``Z``, the deltas, the column sums) stays float32. The
runner rounds the operands of each call into copies of its own (``Runner.gemm``), as the engine
rounds into its buffers: on the CPU float32 copies holding the rounded values, on CUDA bfloat16
copies for ``"bf16"`` (the kernels' ``round_rows``), none for ``"tf32"`` (cuBLAS rounds). Below a
single-unit layer the outer product ``r(D) r(W)`` is a GEMM too (the fused step is for "highest").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .precision import FORMATS


class Runner:
    """One backend's GEMM, fused steps and column sums, run now on the arrays given (NumPy or CuPy
    arrays; CuPy's current stream on CUDA): ``steps.bind(name, *args)`` prepares the call for these
    arrays, which is then made once. ``precision``: how the GEMMs read their operands (module
    docstring)."""

    def __init__(self, steps: Any, precision: str = "highest") -> None:
        self.steps, self.precision, self.fmt = steps, precision, FORMATS[precision]
        self.copies = None if precision == "highest" else steps.operand_copies(precision)  # (dtype, align)

    def gemm(self, a: Any, b: Any, out: Any) -> None:
        """out <- r(a) @ r(b), the engine's GEMM (``cublasGemmEx`` on CUDA, BLAS on the CPU)."""
        if self.precision != "highest":
            if self.copies is None:  # the GEMM rounds its operands itself (CUDA TF32)
                self.steps.bind("matmul", a, b, out, self.precision)(None, None)
                return
            a, b = self.rounded(a), self.rounded(b)
        self.steps.bind("matmul", a, b, out)(None, None)

    def rounded(self, a: Any) -> Any:
        """r(a): a's rounded copy, in rows of the backend's alignment, as a view of a's shape (a is
        C-contiguous or the transpose of a C-contiguous array)."""
        if not a.flags.c_contiguous:
            return self.rounded(a.T).T
        dtype, align = self.copies
        rows, cols = a.shape
        R = self.empty((rows, -(-cols // align) * align), dtype)
        self.step("round_rows", a, R, self.fmt)
        return R[:, :cols]

    def empty(self, shape: tuple[int, int], dtype: Any) -> Any:
        """A new array of this backend (NumPy here; CuPy on CUDA)."""
        return np.empty(shape, dtype)

    def step(self, name: str, *args: Any) -> None:
        """The fused step ``name`` (``bp_gpu.steps_numpy`` semantics) on these arrays."""
        self.steps.bind(name, *args)(None, None)

    def column_sum(self, a: Any, out: Any) -> None:
        """out <- the column sums of a (B, O): a bias gradient."""
        a.sum(axis=0, out=out)


def forward(run: Runner, X: Any, layers: Sequence[tuple[Any, Any]], Z: Sequence[Any], A: Any) -> None:
    """Z[l] <- sigma(z W_l^T + b_l) for the hidden layers (z = X, then Z[l - 1]); A <- z W_L^T + b_L.

    X (B, N_0); Z[l] (B, N_{l+1}) for l < L - 1; A (B, N_L): the output logits a_out.
    """
    z = X
    for (W, b), out in zip(layers[:-1], Z):
        run.gemm(z, W.T, out)
        run.step("bias_sigmoid_forward", out, b)
        z = out
    W, b = layers[-1]
    run.gemm(z, W.T, A)
    A += b


def backward(run: Runner, D: Any, X: Any, layers: Sequence[tuple[Any, Any]], Z: Sequence[Any],
             grads: Sequence[tuple[Any, Any]], G: Sequence[Any], dX: Any = None,
             weight_grads: Sequence[bool] | None = None) -> None:
    """Fill ``grads[l] = (dW_l, db_l)`` (and ``dX`` unless None) from D = dLoss/dA (B, N_L).

    X and Z are the forward's; G[l] (B, N_{l+1}) for l < L - 1 receives the delta of hidden layer l
    (the work buffers of the backward: the fused steps write it in place). D is only read.
    ``weight_grads[l]``: whether dW_l is wanted (its GEMM is skipped if not; the deltas and bias
    gradients are always computed, they are a by-product of the steps that carry the delta down).
    """
    L = len(layers)
    wanted = list(weight_grads) if weight_grads is not None else [True] * L
    run.column_sum(D, grads[-1][1])
    for l in range(L - 1, 0, -1):
        z_prev, delta = Z[l - 1], G[l - 1]
        W, dW, db_prev = layers[l][0], grads[l][0], grads[l - 1][1]
        if wanted[l]:
            run.gemm(D.T, z_prev, dW)  # dL/dw_ij = sum_batch delta_i z_j
        if W.shape[0] == 1 and run.precision == "highest":  # D W is an outer product: fused with sigma'
            run.step("outer_sigmoid_delta_backward", D, W, z_prev, delta, db_prev)
        else:
            run.gemm(D, W, delta)
            run.step("sigmoid_delta_backward", delta, z_prev, db_prev)
        D = delta
    if wanted[0]:
        run.gemm(D.T, X, grads[0][0])
    if dX is not None:
        run.gemm(D, layers[0][0], dX)
