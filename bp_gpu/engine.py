"""The buffered engine: one host algorithm for a training step, GEMMs plus four fused steps.

The same code drives every backend: ``xp`` is NumPy (CPU) or CuPy (CUDA) and ``steps`` is a module
or object with the four functions of ``bp_gpu.steps_numpy`` (the CPU reference, or the Numba CUDA
launchers). Buffers are allocated once per (architecture, batch capacity) and reused, so a
training step allocates nothing and never copies between host and device.

Parameter layout: one flat buffer ``params`` (P,) holding every weight matrix first, then every
bias vector: ``[W_1 | W_2 | ... | W_L | b_1 | ... | b_L]``. ``layers[l]`` are views
``(W (N_l, N_{l-1}), b (N_l,))`` into it; ``grad_layers`` the same into ``grads``. Weights first
means an optimizer step can apply weight decay to a prefix, one launch for every layer.

Per-step host work is kept to the calls themselves: the views a step of ``B`` rows uses (buffer
slices, reshapes, transposes) are built once per batch size and cached (``_plan``), because on a
narrow network (``[28, 64, 64, 1]``, ~190 us per batch on the CPU) building them each step cost
~4 us, 2% of the step. A backend may also provide ``outer_sigmoid_delta_backward`` (see
``bp_gpu.cpu_steps``): the product with a single-unit layer's weights fused into the backward
step; without it the engine runs the same math as ``xp.multiply`` then ``sigmoid_delta_backward``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

# Rows per forward pass when predicting: bounds the work buffers' size.
PREDICT_CHUNK = 8192

# Batch sizes whose views stay cached: a training loop uses two (the batch and the ragged last
# one); prediction and scoring in chunks add a few more.
_PLAN_CACHE = 4


class _Plan(NamedTuple):
    """The views a step of B rows works on (all into the engine's buffers)."""

    fwd: list  # per layer: (W^T (N_{l-1}, N_l), b (N_l,), out (B, N_l)), out the Z_l or A_out view
    D: Any  # (B, N_L): the output delta
    bwd: list  # per layer l >= 1, top down: see loss_and_grad
    DT_first: Any  # (N_1, B): the first layer's delta, transposed, for dW_1 = delta^T X


class _MultiplyThenBackward:
    """The engine's own ``outer_sigmoid_delta_backward`` for backends without one: the broadcast
    (B, 1) * (1, O) (the same product as a K=1 GEMM is several times slower on OpenBLAS: 68 of
    178 us per [28, 64, 64, 1] batch), then the backend's ``sigmoid_delta_backward``."""

    def __init__(self, xp: Any, steps: Any) -> None:
        self.multiply, self.backward = xp.multiply, steps.sigmoid_delta_backward

    def __call__(self, D: Any, W: Any, Z: Any, G: Any, db: Any) -> None:
        self.multiply(D, W, out=G)
        self.backward(G, Z, db)


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
        # (2,) float64, written by output_loss_delta: [0] = scale * sum L of the last step, [1] += sum L
        self.loss_buf = xp.zeros(2, dtype=np.float64)
        self.capacity = 0
        self._plans: dict[int, _Plan] = {}
        self._outer_backward = getattr(steps, "outer_sigmoid_delta_backward", None)
        if self._outer_backward is None:
            self._outer_backward = _MultiplyThenBackward(xp, steps)

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
        self._plans.clear()  # their views point into the old buffers

    def _plan(self, B: int) -> _Plan:
        """The views of a step of B rows (B <= capacity), built on first use of that B."""
        plan = self._plans.get(B)
        if plan is not None:
            return plan
        L, sizes = self.n_layers, self.layer_sizes
        fwd = []
        for l, (W, b) in enumerate(self.layers):
            out = self._Z[l][:B] if l < L - 1 else self._A_out[:B]  # (B, N_l)
            fwd.append((W.T, b, out))
        D = self._delta[0][: B * sizes[-1]].reshape(B, sizes[-1])  # (B, N_L)
        bwd, D_l = [], D
        for l in range(L - 1, 0, -1):  # 0-based layer index; the notes' layer l + 1
            N_prev = sizes[l]
            G = self._delta[(L - l) % 2][: B * N_prev].reshape(B, N_prev)  # next layer's delta
            # (delta^T, Z_{l-1}, dW_l, W_l, G, db_{l-1}, one unit above)
            bwd.append((D_l.T, fwd[l - 1][2], self.grad_layers[l][0], self.layers[l][0], G,
                        self.grad_layers[l - 1][1], sizes[l + 1] == 1))
            D_l = G
        plan = _Plan(fwd, D, bwd, D_l.T)
        if len(self._plans) >= _PLAN_CACHE:
            self._plans.pop(next(iter(self._plans)))  # the oldest
        self._plans[B] = plan
        return plan

    def _forward_logits(self, X: Any, plan: _Plan) -> Any:
        """Z_l = sigma(Z_{l-1} W_l^T + b_l) for the hidden layers; returns the output GEMM
        Z_{L-1} W_L^T without its bias (the output step adds it).  X (B, N_0) -> (B, N_L)."""
        matmul, forward = self.xp.matmul, self.steps.bias_sigmoid_forward
        z = X
        for WT, b, out in plan.fwd[:-1]:
            matmul(z, WT, out=out)  # (B, N_l)
            forward(out, b)
            z = out
        out = plan.fwd[-1][2]
        matmul(z, plan.fwd[-1][0], out=out)
        return out

    def predict_proba(self, X: Any) -> Any:
        """y = sigma(a_out) as a new array.  X (n, N_0) -> (n, N_L).

        Runs in chunks of at most max(capacity, PREDICT_CHUNK) rows, so predicting on a large X
        does not grow the work buffers (kept for the life of the engine) to n rows.
        """
        n = X.shape[0]
        chunk = max(self.capacity, PREDICT_CHUNK)
        self.ensure_capacity(min(n, chunk))
        y = self.xp.empty((n, self.layer_sizes[-1]), dtype=self.dtype)  # (n, N_L)
        for start in range(0, n, chunk):
            Xc = X[start : start + chunk]
            A = self._forward_logits(Xc, self._plan(Xc.shape[0]))
            self.steps.bias_sigmoid_forward(A, self.layers[-1][1])
            y[start : start + Xc.shape[0]] = A
        return y

    def loss_and_grad(self, X: Any, T: Any, positive_class: int, scale: float) -> Any:
        """Forward, output step, backward: fills ``grads`` with d(scale * sum L)/d params and
        returns ``loss_buf``, (2,) float64 on the device: [0] = scale * sum L, [1] += sum L.
        X (B, N_0), T (B, N_L)."""
        B = X.shape[0]
        if B > self.capacity:
            self.ensure_capacity(B)
        plan = self._plan(B)
        matmul = self.xp.matmul
        A = self._forward_logits(X, plan)
        self.steps.output_loss_delta(A, self.layers[-1][1], T, positive_class, scale, plan.D,
                                     self.grad_layers[-1][1], self.loss_buf)
        backward = self.steps.sigmoid_delta_backward
        D = plan.D  # (B, N_L)
        for DT, z_prev, dW, W, G, db_prev, single in plan.bwd:
            matmul(DT, z_prev, out=dW)  # dL/dw_ij = sum_batch delta_i z_j
            if single:
                self._outer_backward(D, W, z_prev, G, db_prev)  # (B, 1) * (1, N_prev), sigma'
            else:
                matmul(D, W, out=G)  # sum_j delta_j w_ji
                backward(G, z_prev, db_prev)
            D = G
        matmul(plan.DT_first, X, out=self.grad_layers[0][0])
        return self.loss_buf

    def loss(self, X: Any, T: Any, positive_class: int, scale: float) -> Any:
        """``loss_buf`` ([0] = scale * sum L, and [1] += sum L), without touching ``grads``."""
        B = X.shape[0]
        self.ensure_capacity(B)
        plan = self._plan(B)
        A = self._forward_logits(X, plan)
        db = self._delta[1][: self.layer_sizes[-1]]  # scratch: the real bias gradient stays
        self.steps.output_loss_delta(A, self.layers[-1][1], T, positive_class, scale, plan.D, db,
                                     self.loss_buf)
        return self.loss_buf
