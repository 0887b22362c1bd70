"""The fused steps of a training step, in NumPy: the reference every kernel is tested against.

The buffered engine (``bp_gpu.engine``) runs a training step as GEMMs plus these steps. A backend
is a set of these functions with the same signatures and in-place semantics: the Numba CPU steps
(``bp_gpu.cpu_steps``, ``bp_gpu.cpu_optimizer``) and the Numba CUDA launchers in ``bp_gpu.kernels``.
``outer_sigmoid_delta_backward`` is optional for a backend (the engine falls back to a multiply and
``sigmoid_delta_backward``, this module's definition of it).

Mixed precision (``bp_gpu.precision``, docs/math.md, "Mixed precision"): the ``*_round`` steps
are the plain steps that also write ``R``, the rounded copy of their float32 output that the next
GEMMs read, in operand format ``fmt`` (``BF16`` or ``TF32``). ``R`` is (B, ld) with ld >= O: the copy
of row r is ``R[r, :O]``, the rest of the row is padding that nothing reads (a device pads each row
to 16 bytes, cuBLAS's tensor-core alignment). The spec's copies hold the rounded values as float32;
a device stores bfloat16 bits (``bp_gpu.precision.bf16_bits``).

Shapes: ``B`` batch rows, ``O`` units of the layer, ``P`` parameters in the flat buffer, ``S`` the
optimizer's state rows (0, 1 or 2), ``N_HYPER`` the slots of ``bp_gpu.optim.hyper``.
All arrays are C-contiguous; the functions write their outputs in place and return nothing, so
that a device backend can do the same without allocating.
"""

from __future__ import annotations

import math

import numpy as np

from .optim import hyper as H
from .precision import round_to


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


def round_rows(A: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """R[:, :O] <- r(A): the rounded copy of a float32 operand (the batch X, a weight matrix W).
    A (B, O); R (B, ld >= O)."""
    R[:, : A.shape[1]] = round_to(A, fmt)


def take_rows_round(X: np.ndarray, idx: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """R[:, :I] <- r(X[idx]): a batch gathered from the training data and rounded in one pass.
    X (n, I); idx (B,); R (B, ld >= I)."""
    R[:, : X.shape[1]] = round_to(X[idx], fmt)


def bias_sigmoid_forward_round(A: np.ndarray, b: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """``bias_sigmoid_forward``, then R[:, :O] <- r(A): Z and the next GEMM's operand r(Z).
    A (B, O), b (O,), R (B, ld >= O)."""
    bias_sigmoid_forward(A, b)
    round_rows(A, R, fmt)


def output_loss_delta_round(A: np.ndarray, b: np.ndarray, T: np.ndarray, positive_class: int, scale: float,
                            D: np.ndarray, db: np.ndarray, loss: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """``output_loss_delta``, then R[:, :O] <- r(D): D (the bias gradient is its float32 column sums)
    and the GEMMs' operand r(D).  R (B, ld >= O)."""
    output_loss_delta(A, b, T, positive_class, scale, D, db, loss)
    round_rows(D, R, fmt)


def sigmoid_delta_backward_round(G: np.ndarray, Z: np.ndarray, db: np.ndarray, R: np.ndarray, fmt: int) -> None:
    """``sigmoid_delta_backward`` with the float32 Z, then R[:, :O] <- r(G): the delta and its
    rounded copy.  G, Z (B, O); db (O,); R (B, ld >= O)."""
    sigmoid_delta_backward(G, Z, db)
    round_rows(G, R, fmt)


def outer_sigmoid_delta_backward_round(D: np.ndarray, W: np.ndarray, Z: np.ndarray, G: np.ndarray, db: np.ndarray,
                                       R: np.ndarray | None, fmt: int) -> None:
    """G <- (r(D) r(W)) * Z * (1 - Z); db <- column sums of G; R[:, :O] <- r(G) (R None: no copy,
    for a device whose GEMMs round their operands themselves). The product of two rounded values
    is exact in float32, so this is the GEMM r(D) r(W) of the contract.
    D (B, 1), W (1, O), Z, G (B, O), db (O,), R (B, ld >= O) or None."""
    np.multiply(round_to(D, fmt), round_to(W, fmt), out=G)
    sigmoid_delta_backward(G, Z, db)
    if R is not None:
        round_rows(G, R, fmt)


def _hyper(hyper: np.ndarray) -> tuple[float, ...]:
    """(t, rate, beta1, beta2, eps, weight_decay) of the step being taken, all float64. Derived
    constants (bias corrections, 1 - beta) are computed in float64 and rounded once to the
    parameters' dtype, as the kernels do."""
    t = float(hyper[H.STEP]) + 1.0
    lr = H.scheduled_rate(int(hyper[H.SCHEDULE]), float(hyper[H.LR]), float(hyper[H.WARMUP]),
                          float(hyper[H.TOTAL]), float(hyper[H.FINAL]), t)
    return t, lr, float(hyper[H.BETA1]), float(hyper[H.BETA2]), float(hyper[H.EPS]), float(hyper[H.WEIGHT_DECAY])


def optimizer_update(rule: int, params: np.ndarray, grads: np.ndarray, state: np.ndarray, hyper: np.ndarray,
                     n_weights: int) -> None:
    """One optimizer step over the flat parameter buffer, every layer at once.  params, grads (P,).

    Reads the step count and the hyperparameters from ``hyper`` (N_HYPER,) float64 and advances
    ``hyper[STEP]``; the rate of step t = hyper[STEP] + 1 is the schedule's (``scheduled_rate``).
    ``state`` (S, P): m = state[0], v = state[1] where the rule has them. The first ``n_weights``
    entries are weights (weight decay applies), the rest biases (never decayed). As PyTorch:

    sgd:      g = grad + wd p;  p -= lr g
    momentum: g = grad + wd p;  m = beta1 m + g;  p -= lr m             (dampening 0, not Nesterov)
    adam:     g = grad + wd p (L2, torch.optim.Adam);  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
              p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),  bc_k = 1 - b_k^t
    adamw:    p *= 1 - lr wd (decoupled, torch.optim.AdamW);  then adam's update with g = grad
    The gradient buffer is not modified. Arithmetic in the parameters' dtype.
    """
    t, lr, b1, b2, eps, wd = _hyper(hyper)
    c = params.dtype.type
    g = grads.copy()
    if rule != H.ADAMW:
        g[:n_weights] += c(wd) * params[:n_weights]
    if rule == H.SGD:
        params -= c(lr) * g
    elif rule == H.MOMENTUM:
        m = state[0]
        m *= c(b1)
        m += g
        params -= c(lr) * m
    elif rule in (H.ADAM, H.ADAMW):
        if rule == H.ADAMW:
            params[:n_weights] *= c(1.0 - lr * wd)
        m, v = state[0], state[1]
        m *= c(b1)
        m += c(1.0 - b1) * g
        v *= c(b2)
        v += c(1.0 - b2) * g * g
        step_size = c(lr / (1.0 - b1**t))
        bc2_sqrt = c(math.sqrt(1.0 - b2**t))
        params -= step_size * m / (np.sqrt(v) / bc2_sqrt + c(eps))
    else:
        raise ValueError(f"unknown update rule {rule}")
    hyper[H.STEP] = t
    hyper[H.LR_LAST] = lr


def lamb_update(params: np.ndarray, grads: np.ndarray, state: np.ndarray, hyper: np.ndarray, n_weights: int,
                segments: np.ndarray) -> None:
    """One LAMB step (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2).

    ``segments`` (K + 1,) int64: the boundaries of the K "layers" of the flat buffer, each with its own
    trust ratio (bp_gpu: every W_l and every b_l). With m = state[0], v = state[1]:
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  r = (m / bc1) / (sqrt(v / bc2) + eps) + wd p
    (wd on the weights only);  per segment k:  ratio_k = ||p_k|| / ||r_k||, or 1 where either norm is 0;
    p_k -= lr ratio_k r_k.  Norms are summed in float64. Reads and advances ``hyper`` as
    ``optimizer_update``.
    """
    t, lr, b1, b2, eps, wd = _hyper(hyper)
    c = params.dtype.type
    m, v = state[0], state[1]
    m *= c(b1)
    m += c(1.0 - b1) * grads
    v *= c(b2)
    v += c(1.0 - b2) * grads * grads
    r = (m / c(1.0 - b1**t)) / (np.sqrt(v / c(1.0 - b2**t)) + c(eps))
    r[:n_weights] += c(wd) * params[:n_weights]
    for lo, hi in zip(segments[:-1], segments[1:]):
        w_norm = math.sqrt(float(np.sum(params[lo:hi].astype(np.float64) ** 2)))
        r_norm = math.sqrt(float(np.sum(r[lo:hi].astype(np.float64) ** 2)))
        ratio = w_norm / r_norm if w_norm > 0 and r_norm > 0 else 1.0
        params[lo:hi] -= c(lr * ratio) * r[lo:hi]
    hyper[H.STEP] = t
    hyper[H.LR_LAST] = lr


def round_weights(params: np.ndarray, R: np.ndarray, wmap: np.ndarray, fmt: int) -> None:
    """The rounded copy of every weight matrix: ``R[dst + i ld + j] <- r(params[start + i cols + j])``
    for i < rows, j < cols. ``wmap`` (L, 5) int64, one row per layer: (start, rows, cols, dst, ld):
    where W_l starts in ``params``, its shape (N_l, N_{l-1}), where its copy starts in R and the
    copy's row stride (>= cols). R (flat copy buffer)."""
    for start, rows, cols, dst, ld in (tuple(int(v) for v in row) for row in wmap):
        view = R[dst : dst + rows * ld].reshape(rows, ld)
        round_rows(params[start : start + rows * cols].reshape(rows, cols), view, fmt)


def optimizer_update_round(rule: int, params: np.ndarray, grads: np.ndarray, state: np.ndarray, hyper: np.ndarray,
                           n_weights: int, R: np.ndarray, wmap: np.ndarray, fmt: int) -> None:
    """``optimizer_update``, and the rounded copy of the updated weights written in the same pass
    (``round_weights``): the GEMMs of the next step read r(W)."""
    optimizer_update(rule, params, grads, state, hyper, n_weights)
    round_weights(params, R, wmap, fmt)


def lamb_update_round(params: np.ndarray, grads: np.ndarray, state: np.ndarray, hyper: np.ndarray, n_weights: int,
                      segments: np.ndarray, R: np.ndarray, wmap: np.ndarray, fmt: int) -> None:
    """``lamb_update``, and the rounded copy of the updated weights (``round_weights``)."""
    lamb_update(params, grads, state, hyper, n_weights, segments)
    round_weights(params, R, wmap, fmt)
