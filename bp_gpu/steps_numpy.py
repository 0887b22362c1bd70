"""The fused steps of a training step, in NumPy: the reference every kernel is tested against.

The buffered engine (``bp_gpu.engine``) runs a training step as GEMMs plus these steps. A backend
is a set of these functions with the same signatures and in-place semantics: this module, the
Numba CPU steps (``bp_gpu.cpu_steps``), the Numba CUDA launchers in ``bp_gpu.kernels``.
``outer_sigmoid_delta_backward`` is optional for a backend (the engine falls back to a multiply and
``sigmoid_delta_backward``, this module's definition of it).

Shapes: ``B`` batch rows, ``O`` units of the layer, ``P`` parameters in the flat buffer.
All arrays are C-contiguous; the functions write their outputs in place and return nothing, so
that a device backend can do the same without allocating.
"""

from __future__ import annotations

import numpy as np

SGD, MOMENTUM, ADAM = 0, 1, 2
OPTIMIZER_CODES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}


def _sigmoid_inplace(a: np.ndarray) -> None:
    # sigma(a) = 1 / (1 + exp(-a)); exp(-a) overflows to inf for a << 0 and 1/inf = 0 is the right
    # limit, so silence the warning rather than branch.
    with np.errstate(over="ignore"):
        np.negative(a, out=a)
        np.exp(a, out=a)
        a += 1
        np.reciprocal(a, out=a)


def bias_sigmoid_forward(A: np.ndarray, b: np.ndarray) -> None:
    """A <- sigma(A + b): the notes' z = sigma(a) after the GEMM a = z_prev W^T.  A (B, O), b (O,)."""
    A += b
    _sigmoid_inplace(A)


def output_loss_delta(
    A: np.ndarray,
    b: np.ndarray,
    T: np.ndarray,
    positive_class: int,
    scale: float,
    D: np.ndarray,
    db: np.ndarray,
    loss: np.ndarray,
) -> None:
    """The output layer in one pass, from the GEMM output A = z_{L-1} W^T (before the bias).

    With a = A + b, s = t (positive_class=1) or s = 1 - t (positive_class=0, the notes) and
    S = sum over rows and outputs of (softplus(a) - s a), unscaled:
    D <- scale * (sigma(a) - s);  db <- column sums of D;  loss[0] <- scale * S;  loss[1] += S.
    ``loss[1]`` is a running sum (a training loop zeroes it once per epoch and reads it once per
    epoch: the sum over batches of B * mean batch loss, with no separate multiply and add per batch).
    A, T, D (B, O); b, db (O,); loss (2,) float64. A is left as it was.
    """
    a = A + b
    s = T if positive_class == 1 else 1 - T
    softplus = np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))
    # No float(): with CuPy arrays (the bench's plain-CuPy peer) that would wait on the device.
    S = (softplus - s * a).sum(dtype=np.float64)
    loss[0] = scale * S
    loss[1] += S
    _sigmoid_inplace(a)
    np.multiply(a - s, scale, out=D, casting="same_kind")
    D.sum(axis=0, out=db)


def sigmoid_delta_backward(G: np.ndarray, Z: np.ndarray, db: np.ndarray) -> None:
    """G <- G * Z * (1 - Z), the notes' delta^(l-1) = (delta^(l) W) * sigma'(a^(l-1)); db <- column
    sums of the new G (the notes' dL/dw_i0 = delta_i).  G, Z (B, O); db (O,)."""
    G *= Z
    G *= 1 - Z
    G.sum(axis=0, out=db)


def outer_sigmoid_delta_backward(D: np.ndarray, W: np.ndarray, Z: np.ndarray, G: np.ndarray, db: np.ndarray) -> None:
    """G <- (D W) * Z * (1 - Z); db <- column sums of G: the backward step below a layer of one unit,
    where the notes' sum_j delta_j w_ji is the outer product of the delta D (B, 1) and the weights
    W (1, O).  Z, G (B, O); db (O,). The product, then ``sigmoid_delta_backward``."""
    np.multiply(D, W, out=G)
    sigmoid_delta_backward(G, Z, db)


def optimizer_update(
    kind: int,
    params: np.ndarray,
    grads: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    n_weights: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    beta1: float,
    beta2: float,
    eps: float,
    bias_correction1: float,
    bias_correction2: float,
) -> None:
    """One optimizer step over the flat parameter buffer, every layer at once.  params, grads (P,).

    The first ``n_weights`` entries are weights (L2 decay applies), the rest biases (no decay):
    g = grad + weight_decay * p.  Then, as PyTorch's SGD / Adam:
    sgd:      p -= lr g
    momentum: m = momentum m + g;  p -= lr m                                   (m (P,))
    adam:     m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
              p -= lr (m / bc1) / (sqrt(v / bc2) + eps),  bc_k = 1 - b_k^step  (m, v (P,))
    The gradient buffer is not modified.
    """
    g = grads.copy()
    g[:n_weights] += weight_decay * params[:n_weights]
    if kind == SGD:
        params -= lr * g
    elif kind == MOMENTUM:
        m *= momentum
        m += g
        params -= lr * m
    elif kind == ADAM:
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        params -= lr * (m / bias_correction1) / (np.sqrt(v / bias_correction2) + eps)
    else:
        raise ValueError(f"unknown optimizer code {kind}")
