"""The spec: backpropagation as ``docs/math.md`` states it, in plain NumPy, one layer at a time.

Every other implementation (the buffered CPU engine, the CUDA kernels) is tested against this
module; it imports nothing GPU-related and is meant to be read next to ``docs/math.md`` (the
derivation, the two output conventions, and which function computes each formula).

Notation (math -> code), for layer ``l = 1..L`` and a batch of ``B`` samples as rows:

- ``w_ij^(l)``  -> ``W[l-1][i, j]``, shape ``(N_l, N_{l-1})``
- ``w_i0^(l)``  -> ``b[l-1][i]``,    shape ``(N_l,)``
- ``a_i^(l)``   -> ``A[l][:, i]``,   ``A[l] = Z[l-1] @ W.T + b``       (B, N_l)
- ``z_i^(l)``   -> ``Z[l][:, i]``,   ``Z[l] = sigma(A[l])``, ``Z[0] = X`` (B, N_l)
- ``y``         -> ``Z[L]`` = ``sigma(a_out)``
- ``delta_i^(l)`` -> ``D[l][:, i]`` = dL/da_i^(l)

With ``positive_class=0``, ``y = p(t=0|x)`` (the convention the derivation starts from); with
``positive_class=1``, ``y = p(t=1|x)``.
Both are the same formulas applied to ``s``, the probability target of ``y``:
``s = 1 - t`` for ``positive_class=0`` and ``s = t`` for ``positive_class=1``. Then

- ``L = -s log y - (1 - s) log(1 - y) = softplus(a_out) - s * a_out``   (stable for any finite a)
- ``delta_out = sigma(a_out) - s``         (positive_class=0: ``sigma(a_out) - (1 - t)``)
- ``delta^(l-1) = (delta^(l) @ W^(l)) * z^(l-1) * (1 - z^(l-1))``
- ``dL/dw_ij^(l) = delta_i^(l) z_j^(l-1)`` and ``dL/dw_i0^(l) = delta_i^(l)``, summed over samples.
"""

from __future__ import annotations

import numpy as np

Layer = tuple[np.ndarray, np.ndarray]


def sigmoid(a: np.ndarray) -> np.ndarray:
    """sigma(a) = 1 / (1 + exp(-a)), without overflow for large |a|."""
    # exp of a non-positive number never overflows: use exp(-|a|) and pick the branch by sign.
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def softplus(a: np.ndarray) -> np.ndarray:
    """log(1 + exp(a)) = -log(1 - sigma(a)), finite for every finite a."""
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def target_of_y(t: np.ndarray, positive_class: int) -> np.ndarray:
    """s, the value y = sigma(a_out) is trained towards: t itself, or 1 - t for positive_class=0."""
    return t if positive_class == 1 else 1 - t


def forward(layers: list[Layer], X: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Step 1 (forward) of docs/math.md: returns (A, Z) with A[0] = None, Z[0] = X and Z[l] = sigma(A[l])."""
    A: list = [None]
    Z = [X]
    for W, b in layers:
        a = Z[-1] @ W.T + b  # (B, N_l)
        A.append(a)
        Z.append(sigmoid(a))
    return A, Z


def per_sample_loss(a_out: np.ndarray, s: np.ndarray) -> np.ndarray:
    """L per sample and output unit: -s log sigma(a) - (1-s) log(1-sigma(a)) = softplus(a) - s a."""
    return softplus(a_out) - s * a_out


def output_delta(a_out: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Step 2 (output delta) of docs/math.md: delta_out = dL/da_out = sigma(a_out) - s."""
    return sigmoid(a_out) - s


def backward(layers: list[Layer], Z: list[np.ndarray], delta_out: np.ndarray) -> tuple[list[Layer], list[np.ndarray]]:
    """Steps 3 and 4 (backward, gradients) of docs/math.md: the gradients (dW, db) of every layer, and every delta.

    ``delta_out`` may already carry a scale (1/B for a mean loss); it flows through linearly.
    """
    L = len(layers)
    D: list = [None] * (L + 1)
    D[L] = delta_out
    for l in range(L, 1, -1):
        W = layers[l - 1][0]
        z = Z[l - 1]
        D[l - 1] = (D[l] @ W) * z * (1 - z)  # sigma'(a^(l-1)) = z (1 - z)
    grads = [(D[l].T @ Z[l - 1], D[l].sum(axis=0)) for l in range(1, L + 1)]
    return grads, D


def loss_and_grad(
    layers: list[Layer], X: np.ndarray, t: np.ndarray, positive_class: int = 1, reduction: str = "mean"
) -> tuple[float, list[Layer]]:
    """All four steps in one call: loss summed over output units, reduced over samples."""
    A, Z = forward(layers, X)
    s = target_of_y(t, positive_class)
    scale = 1.0 / X.shape[0] if reduction == "mean" else 1.0
    loss = float(per_sample_loss(A[-1], s).sum() * scale)
    grads, _ = backward(layers, Z, output_delta(A[-1], s) * scale)
    return loss, grads
