"""The epoch/batch loop: shuffled minibatches through the network's training step (``MLP._step``, the
same step ``MLP.train_step`` runs), one optimizer update each.

Shapes: ``n`` training rows, ``B`` rows of a batch (``<= batch_size``; the last one is ragged),
``I`` input features, ``O`` network outputs.

Design points, each for a stated reason:

- The shuffle order is drawn on the host with a NumPy ``Generator``, so the CPU and CUDA backends
  see the same batches and agree to rounding.
- Nothing waits on the device inside an epoch: each step's output kernel adds its batch loss to a
  device accumulator (``engine.loss_buf[1]``), read once per epoch (one sync), which is also when
  NaN/inf is detected.
- Data placement: "device" copies X and T to the engine's memory once and gathers each batch there
  (``xp.take(..., out=buffer)``); "stream" keeps them in host memory, gathers each batch on the host
  into pinned memory and copies it on a copy stream into one of two device buffers, so the copy of
  batch k+1 overlaps the step of batch k (events order the two streams; the host never waits for the
  step). "auto" streams only when the data would take more than half of the device's free memory.
- Ctrl-C: the model is snapshot (device copies of parameters and optimizer state, host copies of
  the loop state) after every completed epoch, into two alternating buffers so that an interrupt
  during a snapshot still leaves the previous one whole; an interrupt restores the last one. With
  no epoch completed there is nothing to keep: the state goes back to the start and the
  KeyboardInterrupt propagates, so a caller commits nothing.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterator
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


def rng_to_dict(rng: np.random.Generator) -> dict[str, Any]:
    """A generator's PCG64 state, JSON-ready: its 128-bit integers become strings (JSON readers lose them)."""
    bg = rng.bit_generator.state
    return {
        "bit_generator": bg["bit_generator"],
        "state": {k: str(v) for k, v in bg["state"].items()},
        "has_uint32": int(bg["has_uint32"]),
        "uinteger": int(bg["uinteger"]),
    }


def rng_from_dict(r: dict[str, Any]) -> np.random.Generator:
    """The generator ``rng_to_dict`` described."""
    if r["bit_generator"] != "PCG64":
        raise ValueError(f"shuffle generator must be PCG64; got {r['bit_generator']!r}")
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {k: int(v) for k, v in r["state"].items()},
        "has_uint32": int(r["has_uint32"]),
        "uinteger": int(r["uinteger"]),
    }
    return np.random.Generator(bg)


@dataclass
class TrainState:
    """The host side of training that a checkpoint must keep to resume exactly.

    ``rank_rngs``: data-parallel training only (``bp_gpu.distributed``): every process's shuffle
    generator as ``rng_to_dict`` writes it, in rank order, gathered after every epoch, so that any
    process can save the model with all it needs to resume. ``rank``: this process's place in them
    (not saved): a file holds rank 0's generator as ``rng``, so every process writes the same file."""

    rng: np.random.Generator
    n_iter: int = 0
    loss_curve: list[float] = field(default_factory=list)
    validation_scores: list[float] = field(default_factory=list)
    best_validation_score: float | None = None
    no_improvement: int = 0
    rank_rngs: list[dict[str, Any]] | None = None
    rank: int = 0

    def copy(self) -> TrainState:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (see ``rng_to_dict``)."""
        d = {
            "rng": rng_to_dict(self.rng) if self.rank == 0 or self.rank_rngs is None else self.rank_rngs[0],
            "n_iter": self.n_iter,
            "loss_curve": list(self.loss_curve),
            "validation_scores": list(self.validation_scores),
            "best_validation_score": self.best_validation_score,
            "no_improvement": self.no_improvement,
        }
        if self.rank_rngs is not None:
            d["rank_rngs"] = list(self.rank_rngs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        best = d["best_validation_score"]
        rank_rngs = d.get("rank_rngs")
        if rank_rngs is not None:
            for r in rank_rngs:
                rng_from_dict(r)  # each must describe a generator
        return cls(
            rng=rng_from_dict(d["rng"]),
            n_iter=int(d["n_iter"]),
            loss_curve=[float(x) for x in d["loss_curve"]],
            validation_scores=[float(x) for x in d["validation_scores"]],
            best_validation_score=None if best is None else float(best),
            no_improvement=int(d["no_improvement"]),
            rank_rngs=None if rank_rngs is None else [dict(r) for r in rank_rngs],
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
    """X, T copied once to the engine's memory; batches gathered there.  X (n, I), T (n, O).

    ``stage(X, idx)``, for an engine whose GEMMs read a rounded copy of the batch (precision tf32
    or bf16 with copies: ``Engine.stage_rows``), gathers and rounds the rows into that copy in one
    pass and returns it; the batch yielded is then the copy (``staged``), and no float32 batch is
    written."""

    def __init__(self, xp: Any, X: Any, T: Any, capacity: int,
                 stage: Callable[[Any, Any], Any] | None = None) -> None:
        self.xp = xp
        self.X = xp.ascontiguousarray(xp.asarray(X))  # (n, I) on the device
        self.T = xp.ascontiguousarray(xp.asarray(T))  # (n, O)
        self.stage = stage
        self.staged = stage is not None
        self.Xb = None if self.staged else xp.empty((capacity, X.shape[1]), dtype=X.dtype)  # (batch_size, I)
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
            views = self.views[B] = (None if self.staged else self.Xb[:B], self.Tb[:B])
        Xb, Tb = views
        if self.staged:
            Xb = self.stage(self.X, idx)
        else:
            self.take(self.X, idx, Xb)
        self.take(self.T, idx, Tb)
        return Xb, Tb


class DeviceStaging:
    """Host batches to device buffers on a copy stream, overlapping the previous batch's step: the
    one place the pinned-memory double buffering lives (``StreamedBatches`` fills it by gathering
    rows of host arrays, ``DatasetSource`` with batches read from a file).

    Two slots, each a pinned host buffer, a device buffer and two events (timing disabled): ``copied``
    (recorded on the copy stream after the slot's copy; the compute stream waits on it) and
    ``consumed`` (recorded on the compute stream after the step that read the slot; the next copy
    into the slot waits on it). The host blocks only on ``copied`` of the copy made two batches
    earlier, before overwriting that pinned buffer. (CuPy: ``ndarray.set(pinned, stream=)`` is an
    asynchronous copy; ``Stream.wait_event`` and ``Event.record(stream)`` enqueue without blocking.)
    Without CuPy (the CPU engine, the simulator) the slots are plain arrays filled in place.
    """

    def __init__(self, xp: Any, capacity: int, widths: tuple[int, int], dtypes: tuple[Any, Any]) -> None:
        self.xp, self.cupy = xp, _is_cupy(xp)
        shapes = [(capacity, w) for w in widths]  # (batch_size, I), (batch_size, O)
        self.slots = []
        for _ in range(2):
            if self.cupy:
                import cupyx

                host = [cupyx.empty_pinned(shape, dt) for shape, dt in zip(shapes, dtypes)]
                events = (xp.cuda.Event(disable_timing=True), xp.cuda.Event(disable_timing=True))
            else:
                host, events = None, None
            device = [xp.empty(shape, dt) for shape, dt in zip(shapes, dtypes)]
            self.slots.append((host, device, events))
        self.copy_stream = xp.cuda.Stream(non_blocking=True) if self.cupy else None
        self.views: dict[tuple[int, int], tuple[Any, Any]] = {}  # (slot, B) -> device views
        self.turn, self.last = 0, None

    def send(self, B: int, fill: Callable[[Any, Any], None]) -> tuple[Any, Any]:
        """``fill(X_host (B, I), T_host (B, O))`` writes a batch of B rows; returns its device views."""
        i = self.turn
        self.turn ^= 1
        host, (dx, dt), events = self.slots[i]
        views = self.views.get((i, B))
        if views is None:
            views = self.views[(i, B)] = (dx[:B], dt[:B])
        if not self.cupy:
            fill(*views)
            return views
        hx, ht = host
        compute = self.xp.cuda.get_current_stream()
        if self.last is not None:
            self.slots[self.last][2][1].record(compute)  # the step of the last batch has been enqueued
        self.last = i
        copied, consumed = events
        copied.synchronize()  # the pinned buffer's copy of two batches ago has left it
        fill(hx[:B], ht[:B])
        self.copy_stream.wait_event(consumed)  # the step two batches ago has read the device buffer
        views[0].set(hx[:B], stream=self.copy_stream)
        views[1].set(ht[:B], stream=self.copy_stream)
        copied.record(self.copy_stream)
        compute.wait_event(copied)
        return views


class StreamedBatches:
    """X, T stay in host memory; each batch is gathered on the host (into ``DeviceStaging``'s pinned
    buffer) and copied to the device on a copy stream, overlapping the previous batch's step.
    X (n, I), T (n, O)."""

    def __init__(self, xp: Any, X: np.ndarray, T: np.ndarray, capacity: int) -> None:
        self.X, self.T = np.asarray(X), np.asarray(T)
        self.staging = DeviceStaging(xp, capacity, (X.shape[1], T.shape[1]), (X.dtype, T.dtype))

    def start_epoch(self, order: np.ndarray) -> None:
        self.order = order

    def batch(self, start: int, stop: int) -> tuple[Any, Any]:
        idx = self.order[start:stop]

        def gather(Xb: Any, Tb: Any) -> None:  # the CPU backend's gather: see ResidentBatches
            take_rows(self.X, idx, Xb)
            take_rows(self.T, idx, Tb)

        return self.staging.send(stop - start, gather)


def make_batches(engine: Any, X: Any, T: Any, batch_size: int, placement: str = "auto") -> Any:
    """The batch source for X (n, I), T (n, O) of the engine's dtype (see ``choose_placement``)."""
    where = choose_placement(engine, int(X.nbytes + T.nbytes), placement)
    capacity = min(batch_size, X.shape[0])
    if where == "device" or not isinstance(X, np.ndarray):  # on the device, gathering there beats a round trip
        return ResidentBatches(engine.xp, X, T, capacity, engine.stage_rows if engine.rounds_batch else None)
    return StreamedBatches(engine.xp, X, T, capacity)


class ArraySource:
    """Minibatches of in-memory arrays X (n, I), T (n, O) of the engine's dtype: each epoch a
    permutation of the rows drawn from the loop's generator, cut into consecutive batches of
    ``batch_size`` (the last one ragged). ``epoch(rng)`` yields ``(Xb, Tb)`` on the engine's device."""

    def __init__(self, engine: Any, X: Any, T: Any, batch_size: int, placement: str = "auto") -> None:
        self.n_rows = int(X.shape[0])
        self.batch_size = min(batch_size, self.n_rows)
        self.steps_per_epoch = -(-self.n_rows // self.batch_size)
        self.batches = make_batches(engine, X, T, self.batch_size, placement)
        # Whether each Xb is the engine's rounded batch copy (see ResidentBatches): a step on it
        # runs the plan with staged=True.
        self.staged = getattr(self.batches, "staged", False)

    def epoch(self, rng: np.random.Generator, order: np.ndarray | None = None) -> Iterator[tuple[Any, Any]]:
        """One epoch's batches; ``order`` replaces the shuffle (the benchmark's fixed order)."""
        order = rng.permutation(self.n_rows) if order is None else order
        n, bs = len(order), self.batch_size
        self.batches.start_epoch(order)
        for start in range(0, n, bs):
            yield self.batches.batch(start, min(start + bs, n))


def run_epoch(
    net: Any,
    optimizer: Any,
    source: Any,
    rng: np.random.Generator,
    on_batch: Callable[[int], None] | None = None,
    order: np.ndarray | None = None,
) -> float:
    """One epoch of ``source``'s batches through the network's training step; returns the mean
    training loss (the epoch's one sync: the step's output kernel sums the batch losses on the
    device)."""
    engine = net._engine
    engine.loss_buf[1:2] = 0
    n = 0
    staged = getattr(source, "staged", False)
    epoch = source.epoch(rng) if order is None else source.epoch(rng, order)
    try:
        for Xb, Tb in epoch:
            B = Xb.shape[0]
            net._step(Xb, Tb, optimizer, 1.0 / B, staged=staged)
            n += B
            if on_batch is not None:
                on_batch(B)
    finally:
        close = getattr(epoch, "close", None)
        if close is not None:
            close()  # a source reading in a thread stops it now, not when the traceback is freed
    return float(engine.loss_buf[1]) / n


class Snapshot:
    """Device copies of the parameters and the optimizer's buffers (moments, step count and
    hyperparameters), with the host loop state, at one moment."""

    def __init__(self, engine: Any, optimizer: Any) -> None:
        xp = engine.xp
        self.engine, self.optimizer = engine, optimizer
        self.live = [engine.params, *optimizer.device_buffers()]
        self.saved = [xp.empty_like(a) for a in self.live]
        self.hyperparameters: dict[str, Any] = {}
        self.state: TrainState | None = None

    def capture(self, state: TrainState) -> None:
        xp = self.engine.xp
        for dst, src in zip(self.saved, self.live):
            xp.copyto(dst, src)
        self.hyperparameters = self.optimizer.host_config()
        self.state = state.copy()

    def restore(self, state: TrainState, keep_host: bool = False) -> None:
        """Put the device state back; the host state too unless ``keep_host``."""
        xp = self.engine.xp
        for dst, src in zip(self.live, self.saved):
            xp.copyto(dst, src)
        self.optimizer.restore_host_config(self.hyperparameters)
        if not keep_host:
            state.__dict__.update(self.state.copy().__dict__)


def train(
    net: Any,
    optimizer: Any,
    state: TrainState,
    source: Any,
    *,
    epochs: int,
    validate: Callable[[], float] | None = None,
    n_iter_no_change: int = 10,
    tol: float = 1e-4,
    monitor: TrainingMonitor | None = None,
    make_view: Callable[[], Any] | None = None,
    verbose: bool = False,
) -> bool:
    """Train on the batches of ``source`` (``ArraySource`` or any object with ``n_rows`` and
    ``epoch(rng)``; one that also has ``run_epoch(net, optimizer, rng, on_batch)`` runs its epochs
    itself and returns their mean loss) for ``epochs`` epochs (fewer when ``validate`` is given and stops improving).
    A source with a ``close()`` has it called on the way out (a data-set source's reader stops
    reading the next epoch ahead).

    ``validate()`` returns a score (higher is better) of the current parameters: with it, training
    stops once the score has not improved by ``tol`` for ``n_iter_no_change`` epochs, and the
    parameters of the best epoch are restored (scikit-learn's early stopping). Returns True when
    interrupted by Ctrl-C after at least one epoch (the state is then the last completed epoch's,
    and a RuntimeWarning says so); an interrupt before the first epoch of the call completes puts
    the state back as it was on entry and raises the KeyboardInterrupt. Raises
    ``TrainingDivergedError`` on a NaN/inf loss, leaving the state mid-training for the caller to
    discard or roll back.
    """
    engine = net._engine
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
            # A source with its own epoch (bp_gpu.distributed's, whose steps all-reduce) runs it.
            own = getattr(source, "run_epoch", None)
            loss = (own(net, optimizer, state.rng, on_batch) if own is not None
                    else run_epoch(net, optimizer, source, state.rng, on_batch))
            epoch = state.n_iter + 1
            if not np.isfinite(loss):
                raise TrainingDivergedError(
                    f"training diverged: the mean loss of epoch {epoch} is {loss}; "
                    f"try a smaller learning_rate (it is {optimizer.learning_rate!r})"
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
                        source.n_rows,
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
        if state.n_iter == first:
            raise  # no epoch of this call completed: nothing to keep, the state is as it was
        interrupted = True
        warnings.warn(
            f"training interrupted by the user after {state.n_iter} completed epochs; the model "
            "holds the state at the end of the last completed epoch",
            RuntimeWarning,
            stacklevel=3,
        )
    finally:
        # A source that reads ahead (bp_gpu.dataset_source) has begun the epoch after the last one.
        close = getattr(source, "close", None)
        if close is not None:
            close()
    if best is not None:
        best.restore(state, keep_host=True)
    return interrupted
