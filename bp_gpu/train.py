"""The epoch/batch loop: shuffled minibatches through ``engine.loss_and_grad`` and one optimizer step.

Shapes: ``n`` training rows, ``B`` rows of a batch (``<= batch_size``; the last one is ragged),
``I`` input features, ``O`` network outputs.

Design points, each for a stated reason:

- The shuffle order is drawn on the host with a NumPy ``Generator``, so the CPU and CUDA backends
  see the same batches and agree to rounding.
- Nothing waits on the device inside an epoch: the batch loss is added into a device accumulator and
  read once per epoch (one sync), which is also when NaN/inf is detected.
- Data placement: "device" copies X and T to the engine's memory once and gathers each batch there
  (``xp.take(..., out=buffer)``); "stream" keeps them in host memory and gathers each batch on the
  host into one of two pinned staging buffers whose copy to the device is asynchronous, so the host
  prepares batch k+1 while the device computes batch k. "auto" streams only when the data would
  take more than half of the device's free memory.
- Ctrl-C: the model is snapshot (device copies of parameters and optimizer state, host copies of
  the loop state) after every completed epoch, into two alternating buffers so that an interrupt
  during a snapshot still leaves the previous one whole; an interrupt restores the last one.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .cpu_steps import take_rows

PLACEMENTS = ("auto", "device", "stream")


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingMonitor(Protocol):
    """What ``fit``/``partial_fit`` report to while training (progress bars, checkpoints)."""

    def on_batch(self, n_rows: int) -> None: ...

    def on_epoch(self, info: EpochInfo) -> None: ...


@dataclass
class EpochInfo:
    """One completed epoch. ``model()`` returns a fitted classifier sharing the in-progress state,
    valid only inside the callback (to score it, or ``model().save(path)`` as a checkpoint)."""

    epoch: int  # epochs completed in total (MLPClassifier.n_iter_)
    last_epoch: int  # the epoch count this call stops at unless stopped early
    loss: float  # mean training loss of the epoch
    validation_score: float | None
    seconds: float  # wall time of the epoch
    n_samples: int  # rows per epoch
    model: Callable[[], Any]


@dataclass
class TrainState:
    """The host side of training that a checkpoint must keep to resume exactly."""

    rng: np.random.Generator
    n_iter: int = 0
    loss_curve: list[float] = field(default_factory=list)
    validation_scores: list[float] = field(default_factory=list)
    best_validation_score: float | None = None
    no_improvement: int = 0

    def copy(self) -> TrainState:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the PCG64 state's 128-bit integers become strings (JSON readers lose them)."""
        bg = self.rng.bit_generator.state
        return {
            "rng": {
                "bit_generator": bg["bit_generator"],
                "state": {k: str(v) for k, v in bg["state"].items()},
                "has_uint32": int(bg["has_uint32"]),
                "uinteger": int(bg["uinteger"]),
            },
            "n_iter": self.n_iter,
            "loss_curve": list(self.loss_curve),
            "validation_scores": list(self.validation_scores),
            "best_validation_score": self.best_validation_score,
            "no_improvement": self.no_improvement,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        r = d["rng"]
        if r["bit_generator"] != "PCG64":
            raise ValueError(f"shuffle generator must be PCG64; got {r['bit_generator']!r}")
        bg = np.random.PCG64()
        bg.state = {
            "bit_generator": "PCG64",
            "state": {k: int(v) for k, v in r["state"].items()},
            "has_uint32": int(r["has_uint32"]),
            "uinteger": int(r["uinteger"]),
        }
        best = d["best_validation_score"]
        return cls(
            rng=np.random.Generator(bg),
            n_iter=int(d["n_iter"]),
            loss_curve=[float(x) for x in d["loss_curve"]],
            validation_scores=[float(x) for x in d["validation_scores"]],
            best_validation_score=None if best is None else float(best),
            no_improvement=int(d["no_improvement"]),
        )


def _is_cupy(xp: Any) -> bool:
    return getattr(xp, "__name__", "") == "cupy"


def choose_placement(engine: Any, nbytes: int, placement: str = "auto") -> str:
    """ "device" or "stream" for data of ``nbytes`` on this engine (see the module docstring)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}; got {placement!r}")
    if placement != "auto":
        return placement
    if not _is_cupy(engine.xp):
        return "device"  # the engine's memory is host memory: nothing to stream
    free, _total = engine.xp.cuda.runtime.memGetInfo()
    return "device" if nbytes <= free // 2 else "stream"


class ResidentBatches:
    """X, T copied once to the engine's memory; batches gathered there.  X (n, I), T (n, O)."""

    def __init__(self, xp: Any, X: Any, T: Any, capacity: int) -> None:
        self.xp = xp
        self.X = xp.ascontiguousarray(xp.asarray(X))  # (n, I) on the device
        self.T = xp.ascontiguousarray(xp.asarray(T))  # (n, O)
        self.Xb = xp.empty((capacity, X.shape[1]), dtype=X.dtype)  # (batch_size, I)
        self.Tb = xp.empty((capacity, T.shape[1]), dtype=T.dtype)  # (batch_size, O)
        # On the host, the CPU backend's gather: np.take copies short rows one memmove at a time.
        self.take = take_rows if xp is np else self._device_take
        self.views: dict[int, tuple[Any, Any]] = {}  # B -> (Xb[:B], Tb[:B]): two sizes an epoch

    def _device_take(self, a: Any, idx: Any, out: Any) -> None:
        self.xp.take(a, idx, axis=0, out=out)

    def start_epoch(self, order: np.ndarray) -> None:
        self.order = self.xp.asarray(order)  # one small host->device copy per epoch

    def batch(self, start: int, stop: int) -> tuple[Any, Any]:
        B, idx = stop - start, self.order[start:stop]
        views = self.views.get(B)
        if views is None:
            views = self.views[B] = (self.Xb[:B], self.Tb[:B])
        self.take(self.X, idx, views[0])
        self.take(self.T, idx, views[1])
        return views


class StreamedBatches:
    """X, T stay in host memory; each batch is gathered on the host and copied to the device."""

    def __init__(self, xp: Any, X: np.ndarray, T: np.ndarray, capacity: int) -> None:
        self.xp, self.X, self.T = xp, np.asarray(X), np.asarray(T)
        self.Xb = xp.empty((capacity, X.shape[1]), dtype=X.dtype)  # (batch_size, I) on the device
        self.Tb = xp.empty((capacity, T.shape[1]), dtype=T.dtype)  # (batch_size, O)
        self.cupy = _is_cupy(xp)
        if self.cupy:
            import cupyx

            # Pinned memory makes the copy truly asynchronous; the event of each staging buffer
            # marks when its last copy finished, so it is only overwritten after that.
            self.staging = [
                (
                    cupyx.empty_pinned(self.Xb.shape, X.dtype),
                    cupyx.empty_pinned(self.Tb.shape, T.dtype),
                    xp.cuda.Event(),
                )
                for _ in range(2)
            ]
        else:
            self.staging = [
                (np.empty(self.Xb.shape, X.dtype), np.empty(self.Tb.shape, T.dtype), None)
                for _ in range(2)
            ]
        self.turn = 0

    def start_epoch(self, order: np.ndarray) -> None:
        self.order = order

    def batch(self, start: int, stop: int) -> tuple[Any, Any]:
        B, idx = stop - start, self.order[start:stop]
        hx, ht, done = self.staging[self.turn]
        self.turn ^= 1
        if done is not None:
            done.synchronize()  # the copy out of this buffer two batches ago, not the current batch
        take_rows(self.X, idx, hx[:B])  # the CPU backend's gather: see ResidentBatches
        take_rows(self.T, idx, ht[:B])
        if self.cupy:
            stream = self.xp.cuda.get_current_stream()
            self.Xb[:B].set(hx[:B], stream=stream)
            self.Tb[:B].set(ht[:B], stream=stream)
            done.record(stream)
        else:
            np.copyto(self.Xb[:B], hx[:B])
            np.copyto(self.Tb[:B], ht[:B])
        return self.Xb[:B], self.Tb[:B]


def make_batches(engine: Any, X: Any, T: Any, batch_size: int, placement: str = "auto") -> Any:
    """The batch source for X (n, I), T (n, O) of the engine's dtype (see ``choose_placement``)."""
    where = choose_placement(engine, int(X.nbytes + T.nbytes), placement)
    cls = ResidentBatches if where == "device" else StreamedBatches
    if cls is StreamedBatches and not isinstance(X, np.ndarray):
        cls = ResidentBatches  # already on the device: gathering there is cheaper than a round trip
    return cls(engine.xp, X, T, min(batch_size, X.shape[0]))


def run_epoch(
    engine: Any,
    optimizer: Any,
    batches: Any,
    order: np.ndarray,
    positive_class: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> float:
    """One pass over ``order`` in batches; returns the mean training loss (the epoch's one sync).

    The output step adds each batch's summed loss, B * (mean batch loss), into
    ``engine.loss_buf[1]`` on the device, so the step allocates and launches nothing for it.
    """
    n = len(order)
    batches.start_epoch(order)
    engine.loss_buf[1] = 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        B = stop - start
        Xb, Tb = batches.batch(start, stop)
        engine.loss_and_grad(Xb, Tb, positive_class, 1.0 / B)
        optimizer.step()
        if on_batch is not None:
            on_batch(B)
    return float(engine.loss_buf[1]) / n


class Snapshot:
    """Device copies of parameters and optimizer state, with the host state, at one moment."""

    def __init__(self, engine: Any, optimizer: Any) -> None:
        xp = engine.xp
        self.engine, self.optimizer = engine, optimizer
        self.params = xp.empty_like(engine.params)
        self.m = xp.empty_like(optimizer.m)
        self.v = xp.empty_like(optimizer.v)
        self.step_count = 0
        self.state: TrainState | None = None

    def capture(self, state: TrainState) -> None:
        xp = self.engine.xp
        xp.copyto(self.params, self.engine.params)
        xp.copyto(self.m, self.optimizer.m)
        xp.copyto(self.v, self.optimizer.v)
        self.step_count = self.optimizer.step_count
        self.state = state.copy()

    def restore(self, state: TrainState, keep_host: bool = False) -> None:
        """Put the device state back; the host state too unless ``keep_host``."""
        xp = self.engine.xp
        xp.copyto(self.engine.params, self.params)
        xp.copyto(self.optimizer.m, self.m)
        xp.copyto(self.optimizer.v, self.v)
        self.optimizer.step_count = self.step_count
        if not keep_host:
            state.__dict__.update(self.state.copy().__dict__)


def train(
    engine: Any,
    optimizer: Any,
    state: TrainState,
    X: Any,
    T: Any,
    *,
    positive_class: int,
    batch_size: int,
    epochs: int,
    placement: str = "auto",
    validate: Callable[[], float] | None = None,
    n_iter_no_change: int = 10,
    tol: float = 1e-4,
    monitor: TrainingMonitor | None = None,
    make_view: Callable[[], Any] | None = None,
    verbose: bool = False,
) -> bool:
    """Train for ``epochs`` epochs (fewer when ``validate`` is given and stops improving).

    ``validate()`` returns a score (higher is better) of the current parameters: with it, training
    stops once the score has not improved by ``tol`` for ``n_iter_no_change`` epochs, and the
    parameters of the best epoch are restored (scikit-learn's early stopping). Returns True when
    interrupted by Ctrl-C (the state is then the last completed epoch's). Raises
    ``TrainingDivergedError`` on a NaN/inf loss, leaving the state mid-training for the caller to
    discard or roll back.
    """
    n = X.shape[0]
    batch_size = min(batch_size, n)
    batches = make_batches(engine, X, T, batch_size, placement)
    snaps = [Snapshot(engine, optimizer), Snapshot(engine, optimizer)]
    snaps[0].capture(state)
    good = 0
    best = Snapshot(engine, optimizer) if validate is not None else None
    if best is not None:
        best.capture(state)
    on_batch = getattr(monitor, "on_batch", None)
    first = state.n_iter
    interrupted = False
    try:
        for _ in range(epochs):
            t0 = time.perf_counter()
            order = state.rng.permutation(n)
            loss = run_epoch(
                engine, optimizer, batches, order, positive_class, batch_size, on_batch
            )
            epoch = state.n_iter + 1
            if not np.isfinite(loss):
                raise TrainingDivergedError(
                    f"training diverged: the mean loss of epoch {epoch} is {loss}; "
                    f"try a smaller learning_rate (it is {optimizer.learning_rate:g})"
                )
            state.n_iter = epoch
            state.loss_curve.append(loss)
            score, stop = None, False
            if validate is not None:
                score = float(validate())
                state.validation_scores.append(score)
                prev = state.best_validation_score
                if prev is None or score > prev:
                    state.best_validation_score = score
                    best.capture(state)
                # scikit-learn's rule: an epoch without a gain of at least tol counts against it.
                state.no_improvement = (
                    0 if prev is None or score >= prev + tol else state.no_improvement + 1
                )
                stop = state.no_improvement >= n_iter_no_change
            k = 1 - good
            snaps[k].capture(state)
            good = k  # only now is the new snapshot whole
            if verbose:
                extra = "" if score is None else f", validation score = {score:.6f}"
                print(f"Epoch {epoch}, loss = {loss:.8f}{extra}")
            if monitor is not None and hasattr(monitor, "on_epoch"):
                monitor.on_epoch(
                    EpochInfo(
                        epoch,
                        first + epochs,
                        loss,
                        score,
                        time.perf_counter() - t0,
                        n,
                        make_view or (lambda: None),
                    )
                )
            if stop:
                if verbose:
                    print(
                        f"Validation score did not improve more than tol={tol} for "
                        f"{n_iter_no_change} consecutive epochs. Stopping."
                    )
                break
    except KeyboardInterrupt:
        snaps[good].restore(state)
        interrupted = True
        warnings.warn(
            f"training interrupted by the user after {state.n_iter} completed epochs; the model "
            "holds the state at the end of the last completed epoch",
            RuntimeWarning,
            stacklevel=3,
        )
    if best is not None:
        best.restore(state, keep_host=True)
    return interrupted
