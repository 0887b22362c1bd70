"""The buffered engine: one host algorithm for a training step, GEMMs plus fused steps, planned once.

The same code drives every backend: ``xp`` is NumPy (CPU) or CuPy (CUDA) and ``steps`` is an object
with the functions of ``bp_gpu.steps_numpy`` and ``bind(name, *args)`` (``bp_gpu.cpu_backend``,
``bp_gpu.cuda_host``). Buffers are allocated once per (architecture, batch capacity) and reused, so
a training step allocates nothing and never copies between host and device.

Parameter layout: one flat buffer ``params`` (P,) holding every weight matrix first, then every
bias vector: ``[W_1 | W_2 | ... | W_L | b_1 | ... | b_L]``. ``layers[l]`` are views
``(W (N_l, N_{l-1}), b (N_l,))`` into it; ``grad_layers`` the same into ``grads``. Weights first
means an optimizer step can apply weight decay to a prefix, one launch for every layer;
``segments`` are the boundaries of the 2L tensors (LAMB's per-layer trust ratios).

Planning: the calls of a step of ``B`` rows — each GEMM and fused step with its buffer views,
geometry and scalars — are bound once per (B, scale, convention, stream) by the backend
(``bp_gpu.plan``) and kept (a few batch sizes at a time), so a step only calls them in order: on a
narrow network (``[28, 64, 64, 1]``) the host work around the calls is most of a step on a GPU
and a few percent of one on the CPU. The batch is the only per-call input (slots ``X`` and ``T``).
The same list, replayed, is a compiled step (``bp_gpu.compiled_step``).

Precision (``bp_gpu.precision``, docs/math.md, "Mixed precision"): in ``"tf32"`` and ``"bf16"``
every GEMM multiplies rounded operands r(X), r(Z), r(D), r(W). Where the backend keeps rounded copies
(``steps.operand_copies(precision)``: the CPU for both, CUDA for bfloat16) the engine allocates them
beside the float32 buffers, the fused step that writes an operand writes its copy too (the
``*_round`` steps), the optimizer writes r(W) in its update's pass and the batch is rounded into
``batch_copy`` by the call that stages it (``round_rows``, or the first call of a plan). Rows of a
copy are padded to ``align`` elements (16 bytes on CUDA, cuBLAS's tensor-core alignment). Without
copies (CUDA TF32) the GEMMs round their operands themselves (``matmul`` bound with ``"tf32"``).
``"highest"`` binds exactly the calls it always did.

Loss buffer: ``loss_buf`` (2,) float64. Each step's output kernel writes ``loss_buf[0] = scale * S``
and adds ``S`` to ``loss_buf[1]``, with S the step's summed (unscaled) loss: the epoch loop zeroes
``loss_buf[1]`` and reads it once per epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .plan import Op, bind_call, run
from .plan import T as T_SLOT
from .plan import X as X_SLOT
from .precision import FORMATS

# Rows per forward pass when predicting: bounds the work buffers' size.
PREDICT_CHUNK = 8192

# Plans kept per kind: a training loop uses two batch sizes (the batch and the ragged last one);
# prediction and scoring in chunks add a few more.
_PLAN_CACHE = 4


class _MultiplyThenBackward:
    """``outer_sigmoid_delta_backward`` for steps that lack it (the NumPy spec): the broadcast
    (B, 1) * (1, O), then ``sigmoid_delta_backward``."""

    def __init__(self, xp: Any, steps: Any) -> None:
        self.multiply, self.backward = xp.multiply, steps.sigmoid_delta_backward

    def __call__(self, D: Any, W: Any, Z: Any, G: Any, db: Any) -> None:
        self.multiply(D, W, out=G)
        self.backward(G, Z, db)


def _cached(cache: dict, key: Any, build: Any) -> Any:
    value = cache.get(key)
    if value is None:
        if len(cache) >= _PLAN_CACHE:
            cache.pop(next(iter(cache)))  # the oldest
        value = cache[key] = build()
    return value


class Engine:
    """Parameters, gradients and work buffers of one MLP on one backend.

    Shapes: ``B`` rows in the current batch, ``N_l`` units of layer l, ``L`` layers.
    """

    def __init__(self, xp: Any, steps: Any, layer_sizes: tuple[int, ...], dtype: np.dtype, name: str,
                 precision: str = "highest"):
        self.xp = xp
        self.steps = steps
        self.name = name
        self.dtype = np.dtype(dtype)
        self.precision = precision
        self.fmt = FORMATS[precision]
        copies = steps.operand_copies(precision) if precision != "highest" else None
        self.copy_dtype, self.align = copies if copies is not None else (None, 1)
        self.layer_sizes = tuple(int(n) for n in layer_sizes)
        sizes = self.layer_sizes
        self.n_layers = len(sizes) - 1
        self.shapes = [(sizes[l + 1], sizes[l]) for l in range(self.n_layers)]
        self.n_weights = sum(o * i for o, i in self.shapes)
        self.n_params = self.n_weights + sum(o for o, _ in self.shapes)
        bounds = np.cumsum([0] + [o * i for o, i in self.shapes] + [o for o, _ in self.shapes])
        self.segments = bounds.astype(np.int64)  # (2L + 1,) host: W_1..W_L, b_1..b_L
        self.params = xp.zeros(self.n_params, dtype=self.dtype)  # (P,)
        self.grads = xp.zeros(self.n_params, dtype=self.dtype)  # (P,)
        self.layers = self._views(self.params)
        self.grad_layers = self._views(self.grads)
        self.loss_buf = xp.zeros(2, dtype=np.float64)  # see the module docstring
        self.loss_view = self.loss_buf[0:1].reshape(())  # loss_buf[0] as a 0-d view: a step returns a copy
        self._eval_loss = xp.zeros(2, dtype=np.float64)  # evaluation's, so it never touches loss_buf[1]
        self.capacity = 0
        self.weight_copy: Any = None  # flat buffer of the r(W_l), see _allocate_weight_copies
        if self.copy_dtype is not None:
            self._allocate_weight_copies()
        self._plans: dict[tuple, list[Op]] = {}
        self._forward_plans: dict[tuple, list[Op]] = {}
        self._loss_plans: dict[tuple, list[Op]] = {}
        self._stage_plans: dict[tuple, tuple[Op, Any]] = {}

    def _views(self, flat: Any) -> list[tuple[Any, Any]]:
        views, w_off, b_off = [], 0, self.n_weights
        for o, i in self.shapes:
            W = flat[w_off : w_off + o * i].reshape(o, i)
            b = flat[b_off : b_off + o]
            views.append((W, b))
            w_off += o * i
            b_off += o
        return views

    # -- rounded copies -----------------------------------------------------------------------------
    @property
    def rounds_batch(self) -> bool:
        """Whether the GEMMs read the batch through the rounded copy ``batch_copy`` (a staged batch)."""
        return self.copy_dtype is not None

    def _ld(self, n: int) -> int:
        """Row stride of a copy of rows of n elements: n rounded up to the alignment."""
        return -(-n // self.align) * self.align

    def _allocate_weight_copies(self) -> None:
        """One flat buffer holding r(W_l) for every layer, each (N_l, ld(N_{l-1})), one after the
        other (every block starts aligned: its size is a multiple of the alignment), and the map
        the optimizer and ``round_weights`` write it by: (start, rows, cols, dst, ld) per layer."""
        rows, w_off, dst = [], 0, 0
        for o, i in self.shapes:
            rows.append((w_off, o, i, dst, self._ld(i)))
            w_off += o * i
            dst += o * self._ld(i)
        self.weight_copy = self.xp.zeros(dst, dtype=self.copy_dtype)
        self.weight_map = self.xp.asarray(np.array(rows, dtype=np.int64).reshape(-1, 5))  # (L, 5)
        self.weight_copies = [  # r(W_l) as (N_l, N_{l-1}) views with row stride ld
            self.weight_copy[d : d + o * ld].reshape(o, ld)[:, :i] for (_, o, i, d, ld) in rows
        ]

    def refresh_weight_copies(self) -> None:
        """r(W) <- round(W) for every layer: after anything but the optimizer wrote the parameters
        (``MLP.set_weights``, the initial weights, a broadcast of them)."""
        if self.weight_copy is not None:
            self.bind("round_weights", self.params, self.weight_copy, self.weight_map, self.fmt)(None, None)

    def batch_copy(self, B: int) -> Any:
        """The rounded batch the GEMMs read, (B, ld(N_0)), for a caller that stages the batch itself
        (``round_rows`` or ``take_rows_round`` into it, then a plan with ``staged=True``)."""
        self._prepare(B)
        return self._rX[:B]

    def stage_rows(self, X: Any, idx: Any) -> Any:
        """Gather rows ``idx`` (B,) int64 of X (n, N_0) rounded into ``batch_copy(B)``, in one pass
        (with copies only: the GEMMs read nothing else of the batch), and return that copy, for a
        plan with ``staged=True``. Its call is prepared once per batch size, stream and X."""
        B = int(idx.shape[0])
        self._prepare(B)

        def build() -> tuple[Op, Any]:
            R = self._rX[:B]
            return self.bind("take_rows_round", X, X_SLOT, R, self.fmt), R

        # The call holds X, so no other array takes its id while it is cached.
        stage, R = _cached(self._stage_plans, (B, self.stream_key(), id(X)), build)
        stage(idx, None)
        return R

    def _gemm(self, a: Any, b: Any, out: Any) -> Op:
        """out <- a @ b: the operands as given (``"highest"``, or rounded copies), or rounded by the
        GEMM itself where the backend keeps no copies."""
        if self.precision != "highest" and self.copy_dtype is None:
            return self.bind("matmul", a, b, out, self.precision)
        return self.bind("matmul", a, b, out)

    def bind(self, name: str, *args: Any) -> Op:
        """One prepared call of step ``name`` on this backend (``steps.bind``; for steps without it,
        such as the NumPy spec, the plain function). A backend without the fused
        ``outer_sigmoid_delta_backward`` gets its two-pass equivalent. With weight copies the
        optimizer steps are their ``*_round`` variants, which write r(W) in the update's pass."""
        if self.weight_copy is not None and name in ("optimizer_update", "lamb_update"):
            name, args = name + "_round", (*args, self.weight_copy, self.weight_map, self.fmt)
        if name == "outer_sigmoid_delta_backward" and not hasattr(self.steps, name):
            return bind_call(_MultiplyThenBackward(self.xp, self.steps), *args)
        bind = getattr(self.steps, "bind", None)
        if bind is not None:
            return bind(name, *args)
        fn = getattr(self.steps, name, None)
        if fn is None and name == "matmul":
            matmul = self.xp.matmul
            fn = lambda a, b, out: matmul(a, b, out=out)  # noqa: E731
        return bind_call(fn, *args)

    def stream_key(self) -> Any:
        """What prepared calls depend on besides the buffers: the backend's current stream (CUDA)."""
        key = getattr(self.steps, "stream_key", None)
        return key() if key is not None else None

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
        if self.copy_dtype is not None:  # zeroed: the padding of a row is never written
            cd, ld = self.copy_dtype, self._ld
            self._rX = xp.zeros((n, ld(self.layer_sizes[0])), dtype=cd)
            self._rZ = [xp.zeros((n, ld(N)), dtype=cd) for N in self.layer_sizes[1:-1]]
            self._rdelta = [xp.zeros(n * ld(widest), dtype=cd) for _ in range(2)]
        self.capacity = n
        for plans in (self._plans, self._forward_plans, self._loss_plans, self._stage_plans):
            plans.clear()  # they point into the old buffers

    # -- plans --------------------------------------------------------------------------------------
    def _forward_ops(self, B: int, staged: bool = False) -> tuple[list[Op], Any]:
        """The calls of Z_l = sigma(Z_{l-1} W_l^T + b_l) for the hidden layers and of the output GEMM
        Z_{L-1} W_L^T (its bias is added by the next call), and that GEMM's output (B, N_L). With
        copies every GEMM reads rounded operands. ``staged``: the rounded batch is already in
        ``batch_copy(B)`` (with copies only), so no call rounds X."""
        if self.copy_dtype is None:
            ops, z = [], X_SLOT
            for l, (W, b) in enumerate(self.layers[:-1]):
                out = self._Z[l][:B]  # (B, N_l)
                ops.append(self._gemm(z, W.T, out))
                ops.append(self.bind("bias_sigmoid_forward", out, b))
                z = out
            A = self._A_out[:B]  # (B, N_L)
            ops.append(self._gemm(z, self.layers[-1][0].T, A))
            return ops, A
        rX = self._rX[:B]  # (B, ld(N_0))
        ops = [] if staged else [self.bind("round_rows", X_SLOT, rX, self.fmt)]
        rz = rX[:, : self.layer_sizes[0]]
        for l, (_, b) in enumerate(self.layers[:-1]):
            out, R = self._Z[l][:B], self._rZ[l][:B]  # (B, N_l), (B, ld(N_l))
            ops.append(self._gemm(rz, self.weight_copies[l].T, out))
            ops.append(self.bind("bias_sigmoid_forward_round", out, b, R, self.fmt))
            rz = R[:, : out.shape[1]]
        A = self._A_out[:B]
        ops.append(self._gemm(rz, self.weight_copies[-1].T, A))
        return ops, A

    def grad_plan(self, B: int, scale: float, positive_class: int, staged: bool = False) -> list[Op]:
        """The calls of one forward + backward pass on a batch of B rows (B <= capacity): fills
        ``grads`` with d(scale * sum L)/d params and ``loss_buf`` as the module docstring says.
        ``staged``: the batch's rounded copy is already in ``batch_copy(B)`` (see ``_forward_ops``)."""
        key = (B, float(scale), positive_class, self.stream_key(), staged)
        return _cached(self._plans, key, lambda: self._grad_ops(B, scale, positive_class, staged))

    def _delta_views(self, k: int, B: int, N: int) -> tuple[Any, Any]:
        """Delta buffer k as (B, N), and its rounded copy as (B, ld(N)) (None without copies)."""
        D = self._delta[k][: B * N].reshape(B, N)
        if self.copy_dtype is None:
            return D, None
        return D, self._rdelta[k][: B * self._ld(N)].reshape(B, self._ld(N))

    def _grad_ops(self, B: int, scale: float, positive_class: int, staged: bool = False) -> list[Op]:
        L, sizes, copies = self.n_layers, self.layer_sizes, self.copy_dtype is not None
        ops, A = self._forward_ops(B, staged)
        D, rD = self._delta_views(0, B, sizes[-1])  # (B, N_L)
        out = (A, self.layers[-1][1], T_SLOT, positive_class, float(scale), D, self.grad_layers[-1][1], self.loss_buf)
        ops.append(self.bind("output_loss_delta_round", *out, rD, self.fmt) if copies
                   else self.bind("output_loss_delta", *out))
        for l in range(L - 1, 0, -1):  # 0-based layer index; the notes' layer l + 1
            N, N_prev = sizes[l + 1], sizes[l]
            z_prev = self._Z[l - 1][:B]  # (B, N_prev)
            G, rG = self._delta_views((L - l) % 2, B, N_prev)  # the layer below's delta
            W, (dW, _), db_prev = self.layers[l][0], self.grad_layers[l], self.grad_layers[l - 1][1]
            d, zp, w = (rD[:, :N], self._rZ[l - 1][:B, :N_prev], self.weight_copies[l]) if copies else (D, z_prev, W)
            ops.append(self._gemm(d.T, zp, dW))  # dL/dw_ij = sum_batch delta_i z_j
            if N == 1:  # sum_j delta_j w_ji is an outer product: fused with sigma'
                if self.precision == "highest":
                    ops.append(self.bind("outer_sigmoid_delta_backward", D, W, z_prev, G, db_prev))
                else:  # r(delta) r(w), rounded in the step (from the float32 D and W)
                    ops.append(self.bind("outer_sigmoid_delta_backward_round", D, W, z_prev, G, db_prev, rG, self.fmt))
            else:
                ops.append(self._gemm(d, w, G))  # sum_j delta_j w_ji
                ops.append(self.bind("sigmoid_delta_backward_round", G, z_prev, db_prev, rG, self.fmt) if copies
                           else self.bind("sigmoid_delta_backward", G, z_prev, db_prev))
            D, rD = G, rG
        x = self._rX[:B, : sizes[0]] if copies else X_SLOT
        ops.append(self._gemm((rD[:, : sizes[1]] if copies else D).T, x, self.grad_layers[0][0]))
        return ops

    def _prepare(self, B: int) -> None:
        if B > self.capacity:
            self.ensure_capacity(B)

    # -- computations -------------------------------------------------------------------------------
    def loss_and_grad(self, X: Any, T: Any, positive_class: int, scale: float) -> Any:
        """Forward, output step, backward: fills ``grads`` with d(scale * sum L)/d params and
        returns ``loss_buf`` (loss_buf[0] = scale * sum L).  X (B, N_0), T (B, N_L)."""
        self._prepare(X.shape[0])
        run(self.grad_plan(X.shape[0], scale, positive_class), X, T)
        return self.loss_buf

    def zero_grads(self) -> None:
        """grads <- 0 and loss_buf[0] <- 0: the contribution of a batch of no rows."""
        self.grads[...] = 0
        self.loss_buf[0:1] = 0

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
            B = Xc.shape[0]

            def build(B: int = B) -> list[Op]:
                ops, A = self._forward_ops(B)
                ops.append(self.bind("bias_sigmoid_forward", A, self.layers[-1][1]))
                return ops

            run(_cached(self._forward_plans, (B, self.stream_key()), build), Xc, None)
            y[start : start + B] = self._A_out[:B]
        return y

    def loss(self, X: Any, T: Any, positive_class: int, scale: float) -> Any:
        """scale * sum L in element [0] of a device buffer (2,) float64, without touching ``grads``
        or ``loss_buf``."""
        B = X.shape[0]
        self._prepare(B)

        def build() -> list[Op]:
            ops, A = self._forward_ops(B)
            db = self._delta[1][: self.layer_sizes[-1]]  # scratch: the real bias gradient stays
            D = self._delta[0][: B * self.layer_sizes[-1]].reshape(B, -1)
            ops.append(self.bind("output_loss_delta", A, self.layers[-1][1], T_SLOT, positive_class, float(scale), D,
                                 db, self._eval_loss))
            return ops

        run(_cached(self._loss_plans, (B, float(scale), positive_class, self.stream_key()), build), X, T)
        return self._eval_loss
