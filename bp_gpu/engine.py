"""The buffered engine: one host algorithm for a training step, GEMMs plus four fused steps.

The same code drives every backend: ``xp`` is NumPy (CPU) or CuPy (CUDA) and ``steps`` is a module
or object with the four functions of ``bp_gpu.steps_numpy`` (the CPU reference, or the Numba CUDA
launchers). Buffers are allocated once per (architecture, batch capacity) and reused, so a
training step allocates nothing and never copies between host and device.

Parameter layout: one flat buffer ``params`` (P,) holding every weight matrix first, then every
bias vector: ``[W_1 | W_2 | ... | W_L | b_1 | ... | b_L]``. ``layers[l]`` are views
``(W (N_l, N_{l-1}), b (N_l,))`` into it; ``grad_layers`` the same into ``grads``. Weights first
means an optimizer step can apply weight decay to a prefix, one launch for every layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Engine:
    """Parameters, gradients and work buffers of one MLP on one backend.

    Shapes: ``B`` rows in the current batch, ``N_l`` units of layer l, ``L`` layers.
    """

    def __init__(self, xp: Any, steps: Any, layer_sizes: tuple[int, ...], dtype: np.dtype, name: str):
        self.xp = xp
        self.steps = steps
        self.name = name
        self.dtype = np.dtype(dtype)
        self.layer_sizes = tuple(int(n) for n in layer_sizes)
        sizes = self.layer_sizes
        self.n_layers = len(sizes) - 1
        self.shapes = [(sizes[l + 1], sizes[l]) for l in range(self.n_layers)]
        self.n_weights = sum(o * i for o, i in self.shapes)
        self.n_params = self.n_weights + sum(o for o, _ in self.shapes)
        self.params = xp.zeros(self.n_params, dtype=self.dtype)  # (P,)
        self.grads = xp.zeros(self.n_params, dtype=self.dtype)  # (P,)
        self.layers = self._views(self.params)
        self.grad_layers = self._views(self.grads)
        self.loss_buf = xp.zeros(1, dtype=np.float64)  # written by output_loss_delta
        self.capacity = 0

    def _views(self, flat: Any) -> list[tuple[Any, Any]]:
        views, w_off, b_off = [], 0, self.n_weights
        for o, i in self.shapes:
            W = flat[w_off : w_off + o * i].reshape(o, i)
            b = flat[b_off : b_off + o]
            views.append((W, b))
            w_off += o * i
            b_off += o
        return views

    def ensure_capacity(self, n: int) -> None:
        """Grow the work buffers to hold a batch of n rows (only outside a training step)."""
        if n <= self.capacity:
            return
        xp, widest = self.xp, max(self.layer_sizes)
        # Z_l of the hidden layers, kept for sigma' = z (1 - z); the output keeps its GEMM result.
        self._Z = [xp.empty((n, N), dtype=self.dtype) for N in self.layer_sizes[1:-1]]
        self._A_out = xp.empty((n, self.layer_sizes[-1]), dtype=self.dtype)
        # Deltas ping-pong between two buffers as wide as the widest layer.
        self._delta = [xp.empty(n * widest, dtype=self.dtype) for _ in range(2)]
        self.capacity = n

    def _forward_logits(self, X: Any) -> Any:
        """Z_l = sigma(Z_{l-1} W_l^T + b_l) for the hidden layers; returns the output GEMM
        Z_{L-1} W_L^T without its bias (the output step adds it).  X (B, N_0) -> (B, N_L)."""
        B = X.shape[0]
        z = X
        for l, (W, b) in enumerate(self.layers):
            out = self._Z[l][:B] if l < self.n_layers - 1 else self._A_out[:B]  # (B, N_l)
            self.xp.matmul(z, W.T, out=out)
            if l < self.n_layers - 1:
                self.steps.bias_sigmoid_forward(out, b)
            z = out
        return z

    def predict_proba(self, X: Any) -> Any:
        """y = sigma(a_out) as a new array.  X (B, N_0) -> (B, N_L)."""
        self.ensure_capacity(X.shape[0])
        A = self._forward_logits(X)
        self.steps.bias_sigmoid_forward(A, self.layers[-1][1])
        return A.copy()

    def loss_and_grad(self, X: Any, T: Any, positive_class: int, scale: float) -> Any:
        """Forward, output step, backward: fills ``grads`` with d(scale * sum L)/d params and
        returns the device buffer (1,) float64 holding scale * sum L.  X (B, N_0), T (B, N_L)."""
        B = X.shape[0]
        self.ensure_capacity(B)
        L, xp, steps = self.n_layers, self.xp, self.steps
        A = self._forward_logits(X)
        N_L = self.layer_sizes[-1]
        D = self._delta[0][: B * N_L].reshape(B, N_L)
        dW, db = self.grad_layers[-1]
        steps.output_loss_delta(A, self.layers[-1][1], T, positive_class, scale, D, db, self.loss_buf)
        for l in range(L - 1, -1, -1):  # 0-based layer index; the notes' layer l + 1
            z_prev = X if l == 0 else self._Z[l - 1][:B]  # (B, N_{l})
            dW, _ = self.grad_layers[l]
            xp.matmul(D.T, z_prev, out=dW)  # dL/dw_ij = sum_batch delta_i z_j
            if l == 0:
                break
            N_prev = self.layer_sizes[l]
            G = self._delta[(L - l) % 2][: B * N_prev].reshape(B, N_prev)
            if D.shape[1] == 1:
                # One unit above: an outer product, which BLAS runs as a K=1 GEMM several times
                # slower than the broadcast (68 of 178 us per [28, 64, 64, 1] batch on OpenBLAS).
                xp.multiply(D, self.layers[l][0], out=G)  # (B, 1) * (1, N_prev)
            else:
                xp.matmul(D, self.layers[l][0], out=G)  # sum_j delta_j w_ji
            steps.sigmoid_delta_backward(G, z_prev, self.grad_layers[l - 1][1])
            D = G
        return self.loss_buf

    def loss(self, X: Any, T: Any, positive_class: int, scale: float) -> Any:
        """scale * sum L as a device buffer (1,) float64, without touching ``grads``."""
        B = X.shape[0]
        self.ensure_capacity(B)
        A = self._forward_logits(X)
        N_L = self.layer_sizes[-1]
        D = self._delta[0][: B * N_L].reshape(B, N_L)
        db = self._delta[1][:N_L]  # scratch: the real bias gradient must stay untouched
        self.steps.output_loss_delta(A, self.layers[-1][1], T, positive_class, scale, D, db, self.loss_buf)
        return self.loss_buf
