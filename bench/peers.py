"""One training epoch per tool: forward, backward, plain SGD update, float32, mean BCE loss.

A peer is built from a workload, its data and the shared initial weights; ``warmup()`` runs a few
batches (JIT compilation, torch.compile, BLAS thread start-up) and ``reset()`` puts the initial
weights back, so the timed ``epoch()`` of every peer starts from the same point and returns the
mean training loss of the epoch (read once at the end: the only host-device sync).

Peers (``PEERS``): ``bp_gpu-cpu``, ``bp_gpu-cuda`` (the classifier's training loop,
``bp_gpu.train.run_epoch``, with ``bp_gpu.optim.SGD``), ``bp_gpu-step-*`` (``MLP.train_step`` in a
user's loop), ``bp_gpu-compiled-*`` (``MLP.compile_step``: CUDA graphs on a GPU), ``torch-eager``,
``torch-compile`` (nn.Linear + nn.Sigmoid, BCEWithLogitsLoss, torch.optim.SGD; ``-cuda`` variants
on a GPU), ``sklearn`` (MLPClassifier, logistic, sgd, momentum 0, one ``partial_fit`` epoch) and
``numpy`` (the loop a NumPy user would write, allocating as it goes).

Mixed precision (``-bf16``, ``-tf32``): the step and compiled peers with ``MLP(precision=...)``
(on the CPU the emulation of the rounding contract, a reference, so its rows are its cost), and
PyTorch in the same precision: ``torch.autocast(device, dtype=torch.bfloat16)`` around the forward
and the loss, or ``torch.backends.cuda.matmul.allow_tf32 = True``.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from .workloads import LEARNING_RATE, Workload

WARMUP_BATCHES = 3


class Peer:
    """Interface; ``unavailable()`` says why a peer cannot run here (None when it can)."""

    name = ""
    device = "cpu"

    @classmethod
    def unavailable(cls) -> str | None:
        return None

    def __init__(self, w: Workload, X: np.ndarray, T: np.ndarray, weights: list) -> None:
        self.w, self.X, self.T, self.weights = w, X, T, weights

    def warmup(self) -> float:
        """Run the first batches (the last, ragged batch shape included); seconds taken."""
        t0 = time.perf_counter()
        bs, n = self.w.batch, self.w.samples
        starts = list(range(0, min(n, WARMUP_BATCHES * bs), bs))
        last = (n - 1) // bs * bs
        self.train_batches(starts + ([last] if last not in starts else []))
        return time.perf_counter() - t0

    def epoch(self) -> float:
        return self.train_batches(list(range(0, self.w.samples, self.w.batch)))

    def train_batches(self, starts: list[int]) -> float:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError


def _have(module: str) -> str | None:
    return None if importlib.util.find_spec(module) else f"{module} is not installed"


# -- bp_gpu ---------------------------------------------------------------------------------------
class BpGpu(Peer):
    backend = "cpu"
    precision = "highest"

    @classmethod
    def unavailable(cls) -> str | None:
        if cls.backend == "cpu":
            return None
        from bp_gpu.backends import cuda_status

        ok, why = cuda_status()
        return None if ok else why

    def __init__(self, w, X, T, weights):
        super().__init__(w, X, T, weights)
        import bp_gpu
        from bp_gpu.optim import SGD
        from bp_gpu.train import ArraySource

        self.net = bp_gpu.MLP(w.sizes, dtype="float32", precision=self.precision, backend=self.backend)
        self.net.set_weights(weights)
        eng = self.net._engine
        eng.ensure_capacity(min(w.batch, w.samples))
        self.opt = SGD(self.net, LEARNING_RATE)
        # "device": X and T go to the engine's memory once, batches are gathered there.
        self.source = ArraySource(eng, X, T, w.batch, "device")

    def train_batches(self, starts):
        from bp_gpu.train import run_epoch

        bs, n = self.w.batch, self.w.samples
        order = np.concatenate([np.arange(s, min(s + bs, n)) for s in starts])
        return run_epoch(self.net, self.opt, self.source, None, order=order)

    def reset(self):
        self.net.set_weights(self.weights)

    def memory_needed(self) -> int:
        """Bytes the epoch must hold: parameters, gradients, work buffers, the data, one batch."""
        e = self.net._engine
        bufs = [e.params, e.grads, *e._Z, e._A_out, *e._delta, self.source.batches.X, self.source.batches.T,
                self.source.batches.Xb, self.source.batches.Tb]
        return int(sum(b.nbytes for b in bufs))


class BpGpuCuda(BpGpu):
    name, device, backend = "bp_gpu-cuda", "cuda", "cuda"


class BpGpuCpu(BpGpu):
    name, device, backend = "bp_gpu-cpu", "cpu", "cpu"


class BpGpuStep(BpGpu):
    """The public step API in a user's own loop: ``net.train_step`` on each batch. The benchmark's
    batches are consecutive slices of rows already on the device, so each is used in place; the
    returned losses are kept and summed once at the end (no sync per step)."""

    name, device, backend = "bp_gpu-step-cpu", "cpu", "cpu"

    def __init__(self, w, X, T, weights):
        super().__init__(w, X, T, weights)
        xp = self.net._engine.xp
        self.Xd, self.Td = xp.asarray(X), xp.asarray(T)

    def _step_fn(self, B):
        return lambda X, T: self.net.train_step(X, T, self.opt)

    def train_batches(self, starts):
        xp, bs, n = self.net._engine.xp, self.w.batch, self.w.samples
        losses, rows = [], 0
        for s in starts:
            e = min(s + bs, n)
            losses.append(self._step_fn(e - s)(self.Xd[s:e], self.Td[s:e]) * (e - s))
            rows += e - s
        return float(xp.sum(xp.stack(losses))) / rows


class BpGpuCompiled(BpGpuStep):
    """``net.compile_step``: one compiled step per batch size (the batch and the ragged last one),
    each copying its batch into fixed buffers and replaying the recorded step (a CUDA graph on a
    GPU)."""

    name, device, backend = "bp_gpu-compiled-cpu", "cpu", "cpu"

    def __init__(self, w, X, T, weights):
        super().__init__(w, X, T, weights)
        self.compiled = {}

    def _step_fn(self, B):
        step = self.compiled.get(B)
        if step is None:
            step = self.compiled[B] = self.net.compile_step(self.opt, B)
        return step


class BpGpuStepCuda(BpGpuStep):
    name, device, backend = "bp_gpu-step-cuda", "cuda", "cuda"


class BpGpuCompiledCuda(BpGpuCompiled):
    name, device, backend = "bp_gpu-compiled-cuda", "cuda", "cuda"


class BpGpuStepBf16(BpGpuStep):
    name, precision = "bp_gpu-step-cpu-bf16", "bf16"


class BpGpuStepTf32(BpGpuStep):
    name, precision = "bp_gpu-step-cpu-tf32", "tf32"


class BpGpuStepCudaBf16(BpGpuStepCuda):
    name, precision = "bp_gpu-step-cuda-bf16", "bf16"


class BpGpuStepCudaTf32(BpGpuStepCuda):
    name, precision = "bp_gpu-step-cuda-tf32", "tf32"


class BpGpuCompiledCudaBf16(BpGpuCompiledCuda):
    name, precision = "bp_gpu-compiled-cuda-bf16", "bf16"


class BpGpuCompiledCudaTf32(BpGpuCompiledCuda):
    name, precision = "bp_gpu-compiled-cuda-tf32", "tf32"


# -- PyTorch --------------------------------------------------------------------------------------
class TorchEager(Peer):
    name, device, compiled = "torch-eager", "cpu", False
    precision = "highest"

    @classmethod
    def unavailable(cls):
        missing = _have("torch")
        if missing or cls.device == "cpu":
            return missing
        import torch

        return None if torch.cuda.is_available() else "torch sees no CUDA device"

    def __init__(self, w, X, T, weights):
        super().__init__(w, X, T, weights)
        import torch

        self.torch = torch
        dev = torch.device(self.device)
        layers: list = []
        for W, _ in weights:
            layers += [torch.nn.Linear(W.shape[1], W.shape[0]), torch.nn.Sigmoid()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(dev)  # the output's sigmoid is in the loss
        self.reset()
        self.loss_fn = torch.nn.BCEWithLogitsLoss()  # mean over the batch
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE, momentum=0)
        self.Xt = torch.from_numpy(X).to(dev)
        self.Tt = torch.from_numpy(T).to(dev)
        if self.precision == "tf32":  # a global switch; each measurement is a process of its own
            torch.backends.cuda.matmul.allow_tf32 = True
        bf16 = self.precision == "bf16"

        def step(x, t):
            self.opt.zero_grad(set_to_none=True)
            # Autocast runs the Linear layers in bfloat16 and BCEWithLogitsLoss in float32 (its op lists).
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = self.loss_fn(self.model(x), t)
            loss.backward()
            self.opt.step()
            return loss.detach()

        # torch.compile of the module: forward and (through AOTAutograd) backward are compiled;
        # the optimizer step stays eager, as in PyTorch's own training recipes.
        if self.compiled:
            self.model = torch.compile(self.model)
        self.step = step

    def train_batches(self, starts):
        bs, n = self.w.batch, self.w.samples
        total = self.torch.zeros((), dtype=self.torch.float64, device=self.Xt.device)
        for s in starts:
            e = min(s + bs, n)
            total += self.step(self.Xt[s:e], self.Tt[s:e]) * (e - s)
        return float(total.item()) / sum(min(s + bs, n) - s for s in starts)

    def reset(self):
        torch = self.torch
        linears = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for lin, (W, b) in zip(linears, self.weights):
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))


class TorchCompile(TorchEager):
    name, compiled = "torch-compile", True


class TorchEagerCuda(TorchEager):
    name, device = "torch-eager-cuda", "cuda"


class TorchCompileCuda(TorchEager):
    name, device, compiled = "torch-compile-cuda", "cuda", True


class TorchEagerBf16(TorchEager):
    name, precision = "torch-eager-bf16", "bf16"


class TorchEagerCudaBf16(TorchEagerCuda):
    name, precision = "torch-eager-cuda-bf16", "bf16"


class TorchEagerCudaTf32(TorchEagerCuda):
    name, precision = "torch-eager-cuda-tf32", "tf32"


class TorchCompileCudaBf16(TorchCompileCuda):
    name, precision = "torch-compile-cuda-bf16", "bf16"


class TorchCompileCudaTf32(TorchCompileCuda):
    name, precision = "torch-compile-cuda-tf32", "tf32"


# -- scikit-learn ---------------------------------------------------------------------------------
class Sklearn(Peer):
    name = "sklearn"

    @classmethod
    def unavailable(cls):
        return _have("sklearn")

    def __init__(self, w, X, T, weights):
        super().__init__(w, X, T, weights)
        if w.sizes[-1] != 1:
            raise ValueError("the sklearn peer models one sigmoid output (binary labels)")
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(
            hidden_layer_sizes=tuple(w.sizes[1:-1]), activation="logistic", solver="sgd",
            learning_rate="constant", learning_rate_init=LEARNING_RATE, momentum=0.0,
            nesterovs_momentum=False, alpha=0.0, batch_size=w.batch, shuffle=False,
        )
        self.y = T[:, 0].astype(np.int64)

    def train_batches(self, starts):
        bs, n = self.w.batch, self.w.samples
        if starts == list(range(0, n, bs)):  # one partial_fit call = one epoch, its own batching
            self.clf.partial_fit(self.X, self.y, classes=[0, 1])
        else:
            import warnings

            with warnings.catch_warnings():  # a ragged last batch is "clipped": as intended
                warnings.simplefilter("ignore", UserWarning)
                for s in starts:
                    self.clf.partial_fit(self.X[s : s + bs], self.y[s : s + bs], classes=[0, 1])
            self.reset()  # the first call drew scikit-learn's own weights: replace them
        return float(self.clf.loss_)

    def reset(self):
        for c, i, (W, b) in zip(self.clf.coefs_, self.clf.intercepts_, self.weights):
            c[...] = W.T  # scikit-learn stores (fan_in, fan_out)
            i[...] = b


# -- plain NumPy ----------------------------------------------------------------------------------
class NumpyLoop(Peer):
    name = "numpy"

    def __init__(self, w, X, T, weights):
        super().__init__(w, X, T, weights)
        self.reset()

    def reset(self):
        self.params = [(W.copy(), b.copy()) for W, b in self.weights]

    def train_batches(self, starts):
        bs, n, lr = self.w.batch, self.w.samples, np.float32(LEARNING_RATE)
        total = 0.0
        for s in starts:
            x, t = self.X[s : s + bs], self.T[s : s + bs]
            B = x.shape[0]
            zs = [x]
            for W, b in self.params[:-1]:
                zs.append(1 / (1 + np.exp(-(zs[-1] @ W.T + b))))
            a = zs[-1] @ self.params[-1][0].T + self.params[-1][1]
            e = np.exp(-np.abs(a))
            total += float((np.maximum(a, 0) + np.log1p(e) - t * a).sum())
            d = (np.where(a >= 0, 1 / (1 + e), e / (1 + e)) - t) / np.float32(B)
            for l in range(len(self.params) - 1, -1, -1):
                W, b = self.params[l]
                dW, db = d.T @ zs[l], d.sum(axis=0)
                if l:
                    d = (d @ W) * zs[l] * (1 - zs[l])
                W -= lr * dW
                b -= lr * db
        return total / sum(min(s + bs, n) - s for s in starts)


PEERS: dict[str, type[Peer]] = {
    p.name: p
    for p in (BpGpuCpu, BpGpuCuda, BpGpuStep, BpGpuCompiled, BpGpuStepCuda, BpGpuCompiledCuda, TorchEager,
              TorchCompile, TorchEagerCuda, TorchCompileCuda, Sklearn, NumpyLoop, BpGpuStepBf16, BpGpuStepTf32,
              BpGpuStepCudaBf16, BpGpuStepCudaTf32, BpGpuCompiledCudaBf16, BpGpuCompiledCudaTf32, TorchEagerBf16,
              TorchEagerCudaBf16, TorchEagerCudaTf32, TorchCompileCudaBf16, TorchCompileCudaTf32)
}
# The peer each throughput ratio is taken against, per device.
REFERENCE = {"cpu": "torch-eager", "cuda": "torch-eager-cuda"}
