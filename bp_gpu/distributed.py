"""Data-parallel training over MPI processes: ``MLPClassifier(distributed=True)`` under ``mpiexec``.

Every process (rank) of ``MPI.COMM_WORLD`` holds its own rows (a shard) and a replica of the same
network. The process-group code of bp_gpu is in this module alone: the classifier calls ``fit``,
``partial_fit`` and ``save`` here when ``distributed=True`` (and the world has more than one
process), and the training loop (``bp_gpu.train.train``) sees a batch source whose ``run_epoch``
does the all-reduces. Nothing below the training loop imports this module.

One epoch, N ranks, rank r holding n_r rows with batch size b_r (``batch_size``, capped at n_r):

- every rank takes S = max_r ceil(n_r / b_r) steps; rank r's step k has b_r(k) rows: full batches,
  its ragged last one, then 0 once its shard is used up;
- at step k each rank computes the gradient of its batch scaled by 1/B(k), B(k) = sum_r b_r(k) (the
  rows actually in the global step), and the gradients are summed across ranks: the result is the
  gradient of the mean loss over the global batch, and every rank applies the same update. So N
  ranks equal one process stepping on the union of their N batches, for every optimizer. The b_r(k)
  follow from the (n_r, b_r) gathered once, so B(k) needs no communication. A rank with no rows left
  contributes zeros (``Engine.zero_grads``) and still joins the all-reduce;
- after the epoch, one all-gather of (summed loss, rows, parameter checksum) per rank: the epoch's
  loss is the mean over every row of every rank, the same number on every rank (summed in rank
  order), so the divergence check and ``loss_curve_`` agree; early stopping scores the union of the
  ranks' held-out rows (one all-reduce of hit and row counts), so every rank stops at the same
  epoch. The checksums (CRC-32 of the parameter bytes) must all be equal, or every rank raises.

Same start: rank 0's initial weights are broadcast; rank r's shuffle generator (and early-stopping
split generator) is rank 0's, jumped r times (``bit_generator.jumped``: 2^127 draws apart for
PCG64), so rank 0 draws exactly what a single process would. ``classes_`` is the union of every
rank's labels (a rank may lack a class).

Engines (no transport of our own): MPI through mpi4py for set-up, agreement, host reductions and
the CPU backend's gradient all-reduce (in place on ``engine.grads``); on GPUs NCCL through
``cupy.cuda.nccl``, its unique id broadcast over MPI: one ``ncclAllReduce`` of the flat gradient
buffer per step, on CuPy's current stream, with no host sync and no allocation. Where CuPy has no
NCCL, MPI on a pinned host copy (one device sync per step; a warning says so once).

Faults. Every MPI collective here is non-blocking and polled against a deadline
(``BP_GPU_COLLECTIVE_TIMEOUT`` seconds, default 300); past it the job is aborted, since a pending
collective cannot be cancelled. Input checks run on every rank and are agreed in one all-gather:
every rank raises the same error, naming the rank where it was found. An error only one rank sees
while training (it would leave the others inside a collective) prints its traceback and ends the
whole job (NCCL communicator aborted, then ``MPI_Abort``); so does Ctrl-C (mpiexec forwards it to
every rank), with status 130. While a group exists, an uncaught exception aborts the job instead of
hanging in ``MPI_Finalize`` (``sys.excepthook``, as ``python -m mpi4py`` does). (mpi4py 4.1 /
MPICH 5.0 behaviour, verified here: /work/notes/cupy_cublas_nccl.md section 6.)
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import _validate as V
from .train import ArraySource, Snapshot, TrainingDivergedError, rng_from_dict, rng_to_dict, train

TIMEOUT_ENV = "BP_GPU_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
INSTALL_HINT = "pip install 'bp_gpu[mpi]'"
# A waiting rank polls this long (the usual wait is the other ranks' step time or less), giving up
# its core between polls (sched_yield) in case a peer it waits for shares that core, then sleeps
# between polls. Without the yield, two ranks on one core (oversubscribed, or placed so by the
# scheduler) took ~8 ms, a scheduler time slice, per all-reduce here instead of ~5 us.
_SPIN_S = 0.02
_yield = getattr(os, "sched_yield", lambda: None)
_EVERY_RANK = "_bp_gpu_every_rank"


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"distributed=True needs mpi4py and an MPI library ({exc}); install them with {INSTALL_HINT} "
            "(mpi4py and the mpich wheel, which brings mpiexec), or build mpi4py against your cluster's MPI"
        ) from None
    return MPI


def _every_rank(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised by every rank at the same point (no rank is left in a collective)."""
    setattr(exc, _EVERY_RANK, True)
    return exc


def raised_on_every_rank(exc: BaseException) -> bool:
    """Whether every rank raises ``exc`` together: agreed input errors, and divergence (detected on
    the global loss). Any other error during data-parallel training ends the job."""
    return bool(getattr(exc, _EVERY_RANK, False)) or isinstance(exc, TrainingDivergedError)


def _portable(exc: Exception | None) -> Exception | None:
    """``exc`` if it survives pickling (to send it to the other ranks), else a RuntimeError saying it."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _on_rank(exc: Exception, rank: int, size: int) -> Exception:
    """The error of rank ``rank`` as every rank raises it: same type, message prefixed with the rank."""
    msg = f"rank {rank} of {size}: {exc}"
    try:
        return type(exc)(msg)
    except Exception:  # a type whose constructor wants more than a message
        return RuntimeError(f"{type(exc).__name__}: {msg}")


def rank_generator(rng: np.random.Generator, rank: int) -> np.random.Generator:
    """Rank ``rank``'s generator from ``rng`` (rank 0's): its stream jumped ``rank`` times, so the
    ranks' streams never overlap and rank 0's is ``rng``'s own; ``rng`` is not advanced."""
    return np.random.Generator(rng.bit_generator.jumped(rank))


def _generator(state: dict[str, Any]) -> np.random.Generator:
    bg = getattr(np.random, state["bit_generator"])()
    bg.state = state
    return np.random.Generator(bg)


def batch_sizes(n_rows: int, batch_size: int) -> list[int]:
    """The rows of each step of one epoch over ``n_rows`` rows: full batches, then the ragged rest."""
    full, rest = divmod(n_rows, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


class ProcessGroup:
    """The processes of one data-parallel job (an MPI communicator) and every collective bp_gpu runs
    on them, each polled against a deadline (``timeout_s``; ``BP_GPU_COLLECTIVE_TIMEOUT`` by default).

    Creating one is collective: every rank of ``comm`` must create it. Attributes: ``rank``, ``size``,
    ``local_rank`` and ``local_size`` (the processes on this node: the ``MPI_COMM_TYPE_SHARED``
    split), ``comm`` (a private duplicate of ``comm``, so user messages never mix with ours).
    """

    def __init__(self, comm: Any, timeout_s: float | None = None) -> None:
        self.MPI = _mpi()
        if timeout_s is None:
            timeout_s = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        self.timeout_s = float(timeout_s)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._nccl: Any = None
        self._bus_id: str | None = None  # PCI bus id of this process's GPU (use_device)
        self._warned_no_nccl = False
        # The barrier proves every rank is here, so the blocking calls after it cannot wait forever.
        self.comm = comm
        self._wait(comm.Ibarrier(), "creating the process group (every rank must call it)")
        dup, req = comm.Idup()
        self._wait(req, "duplicating the communicator")
        self.comm = dup
        node = dup.Split_type(self.MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()

    def __repr__(self) -> str:
        return f"<bp_gpu ProcessGroup rank {self.rank} of {self.size} (local {self.local_rank} of {self.local_size})>"

    # -- the one way to wait ---------------------------------------------------------------------
    def _wait(self, request: Any, what: str) -> None:
        """Poll ``request`` (``MPI_Test`` also drives MPICH's progress) until done; past the deadline
        abort the job: a pending collective cannot be cancelled (MPI has no cancel for them)."""
        if request.Test():
            return
        start = time.monotonic()
        while not request.Test():
            waited = time.monotonic() - start
            if waited > self.timeout_s:
                self.abort(70, f"{what} did not complete within {self.timeout_s:g} s: another process is stuck "
                               f"or gone; ending the job ({TIMEOUT_ENV} sets the limit)")
            if waited > _SPIN_S:
                time.sleep(2e-4)
            else:
                _yield()

    def abort(self, status: int, message: str | None = None, detail: str = "") -> None:
        """End the whole job now: ``detail`` (a traceback) and ``message`` to stderr, the NCCL
        communicator aborted (at most 1 s), then ``MPI_Abort``."""
        sys.stdout.flush()
        if message:
            # One write, and a moment before the kill: the process manager forwards what it has read
            # of our stderr and drops the rest when it tears the job down (tracebacks printed line by
            # line arrived cut short here).
            sys.stderr.write(f"{detail}bp_gpu (rank {self.rank} of {self.size}): {message}\n")
            sys.stderr.flush()
            time.sleep(0.5)
        if self._nccl is not None:
            # ncclCommAbort releases the GIL and may wait on peers: never let it hold up MPI_Abort.
            t = threading.Thread(target=self._nccl.abort, daemon=True)
            t.start()
            t.join(1.0)
        self.MPI.COMM_WORLD.Abort(status)
        # MPICH's MPI_Abort can return (it asks the process manager to kill the job; seen here with
        # MPICH 5.0: code after Abort ran before the kill arrived): this process must not go on.
        os._exit(status)

    def abort_for(self, exc: BaseException) -> None:
        """An error only this rank saw: print it and end the job (status 130 for Ctrl-C, else 1)."""
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, KeyboardInterrupt):
            status = 130
        elif isinstance(exc, SystemExit):
            status = exc.code if isinstance(exc.code, int) and exc.code else 1
        else:
            status = 1
        self.abort(status, f"{type(exc).__name__} on this process during data-parallel training: ending the "
                           "job, since the other processes cannot go on without it", detail)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.abort(130, "interrupted (Ctrl-C): ending the job; model files already written are complete "
                        "(they are written whole or not at all)" if self.rank == 0 else None)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Inside: an error raised on this rank alone, and Ctrl-C, end the job (see the module
        docstring); errors every rank raises (``raised_on_every_rank``) pass through."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        except BaseException as exc:
            if raised_on_every_rank(exc):
                raise
            self.abort_for(exc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    # -- collectives ---------------------------------------------------------------------------------
    def allgather(self, obj: Any, what: str) -> list[Any]:
        """Every rank's (picklable) ``obj``, in rank order."""
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
        sizes = np.empty(self.size, np.int64)
        self._wait(self.comm.Iallgather(np.array([data.size], np.int64), sizes), what)
        buf = np.empty(int(sizes.sum()), np.uint8)
        self._wait(self.comm.Iallgatherv(data, [buf, sizes]), what)
        ends = np.cumsum(sizes)
        return [pickle.loads(buf[e - n:e].tobytes()) for e, n in zip(ends, sizes)]

    def bcast(self, obj: Any, what: str) -> Any:
        """Rank 0's ``obj`` (small objects: seeds, generator states, the NCCL id)."""
        return self.allgather(obj if self.rank == 0 else None, what)[0]

    def bcast_array(self, a: np.ndarray, what: str) -> None:
        """Rank 0's values into ``a`` (a host array of the same shape on every rank), in place."""
        self._wait(self.comm.Ibcast(a, root=0), what)

    def sum(self, a: np.ndarray, what: str) -> None:
        """In-place sum over ranks of a host array (the same result on every rank: MPI requires it)."""
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM), what)

    def gather_rows(self, row: np.ndarray, what: str) -> np.ndarray:
        """(size, k) float64: every rank's ``row`` (k,), in rank order."""
        row = np.ascontiguousarray(row, dtype=np.float64)
        out = np.empty((self.size, row.size), np.float64)
        self._wait(self.comm.Iallgather(row, out), what)
        return out

    def agree(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn`` on every rank; if it raised anywhere, every rank raises the lowest failing
        rank's error (same type, message prefixed ``rank r of N: ``), else return ``fn()``'s result."""
        try:
            result, error = fn(), None
        except Exception as exc:
            result, error = None, exc
        errors = self.allgather(_portable(error), what)
        for r, e in enumerate(errors):
            if e is not None:
                raise _every_rank(_on_rank(e, r, self.size)) from (error if r == self.rank else None)
        return result

    def everywhere(self, exc: Exception) -> Exception:
        """``exc``, computed from gathered data and so raised identically on every rank, marked as such."""
        return _every_rank(exc)

    # -- GPUs -------------------------------------------------------------------------------------------
    def use_device(self, backend: str) -> None:
        """One GPU per process: make the device of index ``local_rank`` modulo the visible devices
        current (before any device memory); a launcher that gives each process its own GPU
        (``CUDA_VISIBLE_DEVICES``, ``srun --gpus-per-task``) leaves one visible: index 0. Local:
        ``check_devices`` then verifies, collectively, that no two processes share a GPU."""
        from .backends import resolve_backend, simulator_enabled

        self._bus_id = None
        if simulator_enabled() or resolve_backend(backend) != "cuda":
            return
        import cupy

        device = cupy.cuda.Device(self.local_rank % cupy.cuda.runtime.getDeviceCount())
        device.use()
        self._bus_id = device.pci_bus_id

    def check_devices(self) -> None:
        """Every rank: two processes on one GPU is an error (NCCL refuses it, and they would halve
        each other's speed)."""
        where = self.allgather((self.MPI.Get_processor_name(), self._bus_id), "comparing GPUs")
        seen: dict[tuple[str, str], int] = {}
        for r, key in enumerate(where):
            if key[1] is None:
                continue
            if key in seen:
                raise _every_rank(RuntimeError(
                    f"ranks {seen[key]} and {r} of {self.size} both use the GPU at PCI {key[1]} on {key[0]}: run "
                    "one process per GPU (no more processes per node than GPUs), or backend='cpu'"))
            seen[key] = r

    def nccl(self) -> Any:
        """The group's NCCL communicator on the current device, made on first use (collective)."""
        if self._nccl is None:
            from cupy.cuda import nccl

            uid = self.bcast(nccl.get_unique_id() if self.rank == 0 else None, "broadcasting the NCCL unique id")
            self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)  # returns once every rank joined
        return self._nccl


_WORLD: ProcessGroup | None = None


def world_group() -> ProcessGroup | None:
    """The group of every process of ``MPI.COMM_WORLD`` (made on first call, collectively), or None
    when the world has a single process (then training is plain training). Raises ImportError with
    the install command when mpi4py is missing."""
    global _WORLD
    MPI = _mpi()
    if MPI.COMM_WORLD.Get_size() == 1:
        return None
    if _WORLD is None:
        _WORLD = ProcessGroup(MPI.COMM_WORLD)
        if sys.excepthook is sys.__excepthook__:
            sys.excepthook = _abort_on_uncaught
    return _WORLD


def _abort_on_uncaught(exc_type: type, exc: BaseException, tb: Any) -> None:
    # A plain `python script.py` under mpiexec would hang in MPI_Finalize after an uncaught exception
    # on one rank (the others wait in a collective): abort the job instead (python -m mpi4py's rule).
    if _WORLD is None:
        sys.__excepthook__(exc_type, exc, tb)
        return
    _WORLD.abort(130 if issubclass(exc_type, KeyboardInterrupt) else 1,
                 "uncaught exception: ending the job (MPI_Abort) so that no process waits forever",
                 "".join(traceback.format_exception(exc_type, exc, tb)))


# -- gradient all-reduce: one call per training step ---------------------------------------------------
class Reducer:
    """Sums ``engine.grads`` over the group in place, once per call (``MLP._step``'s ``reduce_grads``).
    ``seconds``/``calls`` count the host time spent in the calls (for NCCL: enqueueing only)."""

    kind = ""

    def __init__(self, group: ProcessGroup, engine: Any) -> None:
        self.group, self.engine = group, engine
        self.seconds, self.calls = 0.0, 0

    def __call__(self) -> None:
        t0 = time.perf_counter()
        self._reduce()
        self.seconds += time.perf_counter() - t0
        self.calls += 1

    def _reduce(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Wait, with the deadline, for the device work of the steps so far (before reading the loss)."""


class HostReducer(Reducer):
    """MPI all-reduce in place on ``engine.grads`` in host memory (the CPU backend)."""

    kind = "mpi"

    def _reduce(self) -> None:
        self.group.sum(self.engine.grads, "the gradient all-reduce")


class StagedReducer(Reducer):
    """CuPy without NCCL: the gradient to a pinned host buffer (waiting for the backward pass: this
    fallback's one device sync per step), MPI all-reduce there, and back on the current stream."""

    kind = "mpi-staged"

    def __init__(self, group: ProcessGroup, engine: Any) -> None:
        super().__init__(group, engine)
        import cupyx

        self.host = cupyx.empty_pinned(engine.grads.shape, engine.grads.dtype)

    def _reduce(self) -> None:
        stream = self.engine.xp.cuda.get_current_stream()
        self.engine.grads.get(stream=stream, out=self.host)  # blocking: returns when the copy is done
        self.group.sum(self.host, "the gradient all-reduce")
        self.engine.grads.set(self.host, stream=stream)  # from pinned memory: asynchronous


class NcclReducer(Reducer):
    """``ncclAllReduce`` in place on the flat gradient buffer, on CuPy's current stream: enqueued
    behind the backward pass, ahead of the optimizer step, nothing waits and nothing is allocated.
    (CuPy 14.2 ``NcclCommunicator.allReduce(send_ptr, recv_ptr, count, datatype, op, stream_ptr)``,
    cupy_backends/cuda/libs/nccl.pyx; in place is allowed by NCCL.)"""

    kind = "nccl"

    def __init__(self, group: ProcessGroup, engine: Any) -> None:
        super().__init__(group, engine)
        from cupy.cuda import nccl

        self.comm = group.nccl()
        g = engine.grads
        datatype = {4: nccl.NCCL_FLOAT32, 8: nccl.NCCL_FLOAT64}[g.itemsize]
        self._args = (g.data.ptr, g.data.ptr, g.size, datatype, nccl.NCCL_SUM)
        self._cuda = engine.xp.cuda
        self._done = engine.xp.cuda.Event(disable_timing=True)

    def _reduce(self) -> None:
        self.comm.allReduce(*self._args, self._cuda.get_current_stream().ptr)

    def finish(self) -> None:
        # NCCL reports errors asynchronously (ncclCommGetAsyncError) and a collective waiting for a
        # peer never completes: poll the stream's progress against the deadline instead of blocking.
        self._done.record(self._cuda.get_current_stream())
        start = time.monotonic()
        while not self._done.done:
            self.comm.check_async_error()
            waited = time.monotonic() - start
            if waited > self.group.timeout_s:
                self.group.abort(70, f"the GPU work of the epoch (NCCL all-reduces) did not complete within "
                                     f"{self.group.timeout_s:g} s; ending the job ({TIMEOUT_ENV} sets the limit)")
            if waited > _SPIN_S:
                time.sleep(2e-4)
            else:
                _yield()
        self.comm.check_async_error()


def make_reducer(group: ProcessGroup, engine: Any, kind: str | None = None) -> Reducer:
    """The all-reduce for ``engine``: ``"mpi"`` on host memory, ``"nccl"`` on a GPU where CuPy has
    NCCL, else ``"mpi-staged"`` (with a warning, once per group). ``kind`` forces one."""
    if kind is None:
        if engine.xp is np or not hasattr(engine.xp, "cuda"):
            kind = "mpi"
        else:
            from cupy.cuda import nccl

            kind = "nccl" if nccl.available else "mpi-staged"
            if kind == "mpi-staged" and not group._warned_no_nccl and group.rank == 0:
                group._warned_no_nccl = True
                warnings.warn(
                    "CuPy has no NCCL here (install the nvidia-nccl wheel matching your CUDA, e.g. "
                    "nvidia-nccl-cu13): gradients are all-reduced with MPI on host copies, one device "
                    "synchronisation per step",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return {"mpi": HostReducer, "nccl": NcclReducer, "mpi-staged": StagedReducer}[kind](group, engine)


def params_checksum(engine: Any) -> int:
    """CRC-32 of the parameter bytes (a host copy on a GPU): equal on every rank, or replicas differ."""
    return zlib.crc32(np.ascontiguousarray(V.to_numpy(engine.params)))


# -- the global epoch ----------------------------------------------------------------------------------
class ShardedSource:
    """A batch source for ``bp_gpu.train.train``: every rank's local source (``n_rows``,
    ``batch_size``, ``epoch(rng)`` yielding full batches then a ragged last one, e.g. ``ArraySource``
    or a data-set source) stepped as one global epoch (module docstring). ``n_rows`` is the global
    row count; ``steps`` the steps per epoch; ``global_sizes[k]`` = B(k)."""

    def __init__(self, group: ProcessGroup, local: Any, reducer: Reducer) -> None:
        self.group, self.local, self.reduce = group, local, reducer
        shapes = group.allgather((int(local.n_rows), int(local.batch_size)), "gathering the shard sizes")
        per_rank = [batch_sizes(n, b) for n, b in shapes]
        self.shard_rows = [n for n, _ in shapes]
        self.n_rows = sum(self.shard_rows)
        self.steps = max(len(s) for s in per_rank)
        self.global_sizes = [sum(s[k] for s in per_rank if k < len(s)) for k in range(self.steps)]
        self.local_sizes = per_rank[group.rank]
        self.scales = [1.0 / B for B in self.global_sizes]
        self.epochs_run = 0

    def close(self) -> None:
        """Stops the local source's reading ahead, where it reads ahead."""
        close = getattr(self.local, "close", None)
        if close is not None:
            close()

    def run_epoch(self, net: Any, optimizer: Any, rng: np.random.Generator,
                  on_batch: Callable[[int], None] | None = None) -> float:
        """One global epoch; returns the mean loss over every row of every rank."""
        engine, mine = net._engine, len(self.local_sizes)
        engine.loss_buf[1:2] = 0
        batches = iter(self.local.epoch(rng))
        try:
            for k in range(self.steps):
                if k < mine:
                    Xb, Tb = next(batches)
                    if Xb.shape[0] != self.local_sizes[k]:
                        raise RuntimeError(f"the local batch source gave {Xb.shape[0]} rows at step {k}; "
                                           f"{self.local_sizes[k]} were planned")
                    net._step(Xb, Tb, optimizer, self.scales[k], reduce_grads=self.reduce)
                else:  # this shard is used up: a batch of no rows, still in the all-reduce
                    engine.zero_grads()
                    self.reduce()
                    optimizer.step()
                if on_batch is not None:
                    on_batch(self.global_sizes[k])
            if next(batches, None) is not None:
                raise RuntimeError(f"the local batch source gave more than the {mine} batches planned")
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        self.reduce.finish()
        self.epochs_run += 1
        mine_row = [float(engine.loss_buf[1]), float(self.local.n_rows), float(params_checksum(engine))]
        table = self.group.gather_rows(np.array(mine_row), "the epoch's losses and parameter checksums")
        crc = table[:, 2]
        if (crc != crc[0]).any():
            groups = {int(c): [r for r in range(self.group.size) if crc[r] == c] for c in np.unique(crc)}
            raise _every_rank(RuntimeError(
                f"the network's parameters differ between processes after an epoch (ranks with equal "
                f"parameters: {sorted(groups.values())}): data-parallel replicas must stay identical; "
                "every process must run the same bp_gpu, backend, dtype and kind of hardware"))
        return float(table[:, 0].sum() / table[:, 1].sum())


# -- MLPClassifier's data-parallel fit, partial_fit, save -------------------------------------------
def _agreed_params(clf: Any, group: ProcessGroup) -> dict[str, Any]:
    p = group.agree(clf._checked_params, "checking the hyperparameters")
    mine = {k: repr(v) for k, v in clf.get_params().items() if k != "verbose"}
    every = group.allgather(mine, "comparing the hyperparameters")
    for r, theirs in enumerate(every):
        diff = sorted(k for k in every[0] if theirs.get(k) != every[0][k])
        if diff:
            shown = ", ".join(f"{k}={theirs[k]} (rank 0: {every[0][k]})" for k in diff)
            raise _every_rank(ValueError(
                f"rank {r} of {group.size}: hyperparameters differ from rank 0's: {shown}; every process must "
                "build the same MLPClassifier"))
    return p


def _labels_array(y: Any) -> Any:
    if hasattr(y, "iloc"):
        y = y.to_numpy()
    return y if y is None else (V.to_numpy(y) if V.array_module(y) is not np else np.asarray(y))


def _local_rows(X: Any, y: Any) -> tuple[Any, Any, np.ndarray | None]:
    """``(X, y, feature names)`` of this rank: a ``bp_gpu.data`` data set (this process's shard, e.g.
    ``open(path, target=...).shard(rank, world)``) is read into memory here — each process holds its
    own rows only — with its column names when the file has them; a DataFrame keeps its names."""
    from ._feature_names import feature_names
    from .data import Dataset

    if isinstance(X, Dataset):
        if y is not None:
            raise ValueError("y must be None when X is a data set (its target column holds the labels)")
        if X.target is None:
            raise ValueError(f"{X.path}: the data set has no target column; open it with target=...")
        names = np.asarray(list(X.feature_names), dtype=object) if X.named_columns else None
        Xa, ya = X.read_all()
        return Xa, ya, names
    return X, y, feature_names(X)


def _agreed_names(group: ProcessGroup, names: np.ndarray | None) -> np.ndarray | None:
    """The feature names every rank saw (or None); ranks that disagree are an error on every rank."""
    every = group.allgather(None if names is None else [str(n) for n in names], "comparing the feature names")
    for r, theirs in enumerate(every):
        if theirs != every[0]:
            raise _every_rank(ValueError(
                f"rank {r} of {group.size}: the feature names {theirs} differ from rank 0's {every[0]}; every "
                "process must pass the same columns in the same order"))
    return names


def _global_scaler(group: ProcessGroup, X: Any, dtype: np.dtype) -> Any:
    """``standardize=True``: the mean and standard deviation of the training rows of every rank
    (each rank's moments, merged in rank order with Chan et al.'s update), the same on every rank."""
    from .classifier import Standardizer
    from .data.moments import Moments

    local = Moments.of(V.to_numpy(X))
    every = group.allgather((local.n, local.mean, local.m2), "merging the feature statistics")
    total = Moments.empty(local.mean.shape[0])
    for n, mean, m2 in every:
        total = total.merge(Moments(int(n), np.asarray(mean), np.asarray(m2)))
    mean, std = total.mean_std()
    return Standardizer(mean, std, dtype)


def _local_inputs(clf: Any, X: Any, y: Any, n_features: int | None = None) -> tuple[Any, Any, tuple]:
    """This rank's X checked, its labels, and what the other ranks need to know about them:
    ``(n_features, ("indicator", K))`` or ``(n_features, ("labels", sorted unique labels))``."""
    Xh = clf._host_X(X, n_features)
    y_np = _labels_array(y)
    if y_np is None or (y_np.ndim == 2 and y_np.shape[1] > 1):
        kind, classes, _ = clf._encode(y_np, Xh.shape[0])  # raises for None; validates the indicator
        return Xh, y_np, (Xh.shape[1], ("indicator", len(classes)))
    try:
        labels = np.unique(y_np)
    except TypeError as exc:
        raise TypeError(f"y mixes label types that cannot be ordered ({exc}); use one type") from None
    clf._encode(y_np, Xh.shape[0], labels)  # every other label check (finite, discrete, row count)
    return Xh, y_np, (Xh.shape[1], ("labels", labels))


def _global_labels(group: ProcessGroup, info: tuple, need_two: bool = True) -> tuple[str, np.ndarray]:
    """(label kind, union of the labels) from every rank's ``_local_inputs`` info, checked the same
    way on every rank (the same gathered data gives the same verdict everywhere). ``need_two``: the
    union must hold two classes (``fit``; ``partial_fit`` gets them from ``classes``)."""
    from .classifier import BINARY, MULTICLASS, MULTILABEL

    infos = group.allgather(info, "gathering the feature counts and labels")
    d0 = infos[0][0]
    for r, (d, _) in enumerate(infos):
        if d != d0:
            raise _every_rank(ValueError(
                f"rank {r} of {group.size}: X has {d} features but rank 0's X has {d0}; every process must "
                "pass the same columns"))
    kinds = [i[1][0] for i in infos]
    if len(set(kinds)) > 1:
        r = kinds.index("indicator")
        raise _every_rank(ValueError(
            f"rank {r} of {group.size}: y is a 2-D indicator matrix there but 1-D labels on rank "
            f"{kinds.index('labels')}; every process must pass the same kind of y"))
    if kinds[0] == "indicator":
        Ks = [i[1][1] for i in infos]
        for r, K in enumerate(Ks):
            if K != Ks[0]:
                raise _every_rank(ValueError(
                    f"rank {r} of {group.size}: y has {K} label columns but rank 0's has {Ks[0]}"))
        return MULTILABEL, np.arange(Ks[0])
    parts = [i[1][1] for i in infos]
    try:
        classes = np.unique(np.concatenate(parts))
    except (TypeError, ValueError) as exc:
        kinds_ = ", ".join(f"rank {r}: {a.dtype}" for r, a in enumerate(parts))
        raise _every_rank(TypeError(f"the processes' labels cannot be compared ({kinds_}): {exc}")) from None
    if need_two and len(classes) < 2:
        raise _every_rank(ValueError(
            f"y has only one class ({classes[0].item()!r}) on every process; a classifier needs at least two"))
    return (BINARY if len(classes) == 2 else MULTICLASS), classes


def _encode(clf: Any, y_np: Any, n: int, classes: np.ndarray) -> np.ndarray:
    from .classifier import DataConversionWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataConversionWarning)  # _local_inputs warned already
        return clf._encode(y_np, n, classes)[2]


def _same_start(group: ProcessGroup, net: Any, state: Any, split_rng: np.random.Generator | None) -> Any:
    """Rank 0's initial weights and generators everywhere (each rank's generator jumped by its rank)."""
    engine = net._engine
    host = np.ascontiguousarray(V.to_numpy(engine.params))
    group.bcast_array(host, "broadcasting the initial weights")
    engine.params[...] = engine.xp.asarray(host)
    rng0, split0 = group.bcast((state.rng.bit_generator.state,
                                None if split_rng is None else split_rng.bit_generator.state),
                               "broadcasting the shuffle generator")
    state.rng = rank_generator(_generator(rng0), group.rank)
    return None if split0 is None else rank_generator(_generator(split0), group.rank)


def _source(group: ProcessGroup, net: Any, Xh: Any, T: np.ndarray, batch_size: int,
            scaler: Any = None) -> ShardedSource:
    """The training rows as a ``ShardedSource`` over an ``ArraySource`` (what ``_train_and_commit``
    of the classifier builds for one process), standardised when ``scaler`` is given."""
    engine, dt = net._engine, net.dtype
    X = V.check_features(Xh, net.layer_sizes[0], dt, V.array_module(Xh) if V.array_module(Xh) is engine.xp else np)
    if scaler is not None:
        X = scaler.apply(X)
    Tt = np.ascontiguousarray(T, dtype=dt)
    if V.array_module(X) is not np:
        Tt = engine.xp.asarray(Tt)
    return ShardedSource(group, ArraySource(engine, X, Tt, batch_size), make_reducer(group, engine))


def _global_accuracy(group: ProcessGroup, clf: Any, net: Any, kind: str, Xv: Any, Tv: np.ndarray) -> float:
    n = Tv.shape[0]
    counts = np.array([round(clf._accuracy(net, kind, Xv, Tv) * n), n], dtype=np.float64)
    group.sum(counts, "the validation score")
    return float(counts[0] / counts[1])


def _train_and_commit(clf: Any, group: ProcessGroup, net: Any, opt: Any, state: Any, kind: str,
                      classes: np.ndarray, source: ShardedSource, p: dict[str, Any], epochs: int,
                      validate: Callable[[], float] | None, monitor: Any, names: np.ndarray | None,
                      scaler: Any) -> None:
    def view() -> Any:
        m = type(clf)(**clf.get_params())
        m._commit(net, opt, state, kind, classes, early=validate is not None, feature_names=names, scaler=scaler)
        m._group = group  # its save() is collective, like clf's
        return m

    train(net, opt, state, source, epochs=epochs, validate=validate, n_iter_no_change=p["n_iter_no_change"],
          tol=p["tol"], monitor=monitor, make_view=view, verbose=bool(clf.verbose) and group.rank == 0)
    clf._commit(net, opt, state, kind, classes, early=validate is not None, feature_names=names, scaler=scaler)
    clf._group = group


def _steps_as_rows(source: ShardedSource, p: dict[str, Any]) -> int:
    # The classifier sizes a schedule from the rows of an epoch, at ceil(rows / batch_size) steps
    # each; a data-parallel epoch has source.steps steps, which this many rows give.
    return source.steps * p["batch_size"]


def fit(clf: Any, group: ProcessGroup, X: Any, y: Any, monitor: Any = None) -> Any:
    """``MLPClassifier.fit`` on every rank of ``group``, each with its own rows (X, y)."""
    with group.guard():
        p = _agreed_params(clf, group)
        group.agree(lambda: group.use_device(clf.backend), "choosing this process's GPU")
        group.check_devices()
        X, y, names = group.agree(lambda: _local_rows(X, y), "reading this process's rows")
        names = _agreed_names(group, names)
        Xh, y_np, info = group.agree(lambda: _local_inputs(clf, X, y), "checking X and y")
        kind, classes = _global_labels(group, info)
        T = group.agree(lambda: _encode(clf, y_np, Xh.shape[0], classes), "encoding y")
        net, state, split_rng = group.agree(lambda: clf._fresh(p, Xh.shape[1], T.shape[1]), "building the network")
        split_rng = _same_start(group, net, state, split_rng)
        Xv = None
        if clf.early_stopping:
            tr, va = group.agree(lambda: clf._split(kind, T, p["validation_fraction"], split_rng),
                                 "holding out the validation rows")
            Xv, Tv = Xh[clf._index(Xh, va)], T[va]
            Xh, T = Xh[clf._index(Xh, tr)], T[tr]
        scaler = _global_scaler(group, Xh, net.dtype) if clf.standardize else None
        validate = None
        if Xv is not None:
            Xv = clf._device_X(net, Xv, scaler)
            validate = lambda: _global_accuracy(group, clf, net, kind, Xv, Tv)  # noqa: E731
        source = _source(group, net, Xh, T, p["batch_size"], scaler)
        opt = clf._optimizer_for(net, p, _steps_as_rows(source, p))
        _train_and_commit(clf, group, net, opt, state, kind, classes, source, p, p["epochs"], validate, monitor,
                          names, scaler)
    return clf


def _to_local_device(group: ProcessGroup, clf: Any) -> None:
    """A model loaded before this process chose its GPU sits on the default device: rebuild it on the
    local rank's (through the file format's arrays, as unpickling does)."""
    from .backends import simulator_enabled

    group.use_device(clf.net_.backend)
    if clf.net_.backend != "cuda" or simulator_enabled():
        return
    import cupy

    if clf.net_._engine.params.device.id == cupy.cuda.Device().id:
        return
    from .persistence import from_arrays, to_arrays

    moved = from_arrays(to_arrays(clf), "the loaded model", backend="cuda")
    params = set(clf.get_params())
    clf.__dict__.update({k: v for k, v in moved.__dict__.items() if k not in params})


def _adopt(group: ProcessGroup, clf: Any) -> None:
    """A model not trained by this group (loaded from a file): each rank takes its own shuffle
    generator from the file; the world size must be the one that saved it, and every rank must hold
    the same parameters."""
    if getattr(clf, "_group", None) is group:
        return

    def check() -> None:
        saved = clf._state.rank_rngs
        n = 1 if saved is None else len(saved)
        if n != group.size:
            raise ValueError(
                f"this model was trained by {n} process(es), and resuming it exactly needs the shuffle "
                f"generator of each: resume it under mpiexec -n {n} (it is running under {group.size}), or "
                "fit a new model")
        if saved is not None and saved[0] != rng_to_dict(clf._state.rng):
            raise ValueError(
                f"this model was trained further by a single process after {n} processes saved it, so the "
                "processes' shuffle generators in it are stale: fit a new model, or resume the file they saved")

    group.agree(check, "checking the model to resume")
    group.agree(lambda: _to_local_device(group, clf), "moving the model to this process's GPU")
    group.check_devices()
    crc = group.gather_rows(np.array([float(params_checksum(clf.net_._engine))]), "comparing the models")[:, 0]
    if (crc != crc[0]).any():
        r = int(np.flatnonzero(crc != crc[0])[0])
        raise _every_rank(ValueError(
            f"rank {r} of {group.size}: the model's parameters differ from rank 0's; every process must "
            "load the same model file"))
    clf._state.rng = rng_from_dict(clf._state.rank_rngs[group.rank])


def partial_fit(clf: Any, group: ProcessGroup, X: Any, y: Any, classes: Any = None, epochs: int = 1,
                monitor: Any = None) -> Any:
    """``MLPClassifier.partial_fit`` on every rank of ``group``, each with its own rows (X, y)."""
    from ._feature_names import check_feature_names
    from .classifier import BINARY, MULTICLASS, MULTILABEL, _int

    with group.guard():
        p = _agreed_params(clf, group)
        epochs = group.agree(lambda: _int("epochs", epochs, 1), "checking epochs")
        fitted = group.allgather(hasattr(clf, "net_"), "checking which processes hold a fitted model")
        if len(set(fitted)) > 1:
            r = fitted.index(not fitted[0])
            raise _every_rank(ValueError(
                f"rank {r} of {group.size}: the model is {'' if fitted[r] else 'not '}fitted there but "
                f"{'' if fitted[0] else 'not '}fitted on rank 0; every process must continue the same model"))
        X_, y_, names = group.agree(lambda: _local_rows(X, y), "reading this process's rows")
        names = _agreed_names(group, names)
        if not fitted[0]:
            group.agree(lambda: group.use_device(clf.backend), "choosing this process's GPU")
            group.check_devices()

            def first() -> tuple:
                Xh, y_np, info = _local_inputs(clf, X_, y_)
                if classes is None and info[1][0] != "indicator":
                    raise ValueError("classes must be passed on the first call to partial_fit "
                                     "(every label that will appear, e.g. np.unique(y_all))")
                cls = None if classes is None else np.unique(np.asarray(classes))
                if cls is not None and len(cls) < 2:
                    raise ValueError(f"classes must hold at least two labels; got {cls.tolist()!r}")
                return Xh, y_np, info, cls

            Xh, y_np, info, cls = group.agree(first, "checking X, y and classes")
            kind, union = _global_labels(group, info, need_two=False)
            if kind != MULTILABEL:
                every = group.allgather(cls, "comparing classes")
                for r, c in enumerate(every):
                    if not np.array_equal(c, every[0]):
                        raise _every_rank(ValueError(
                            f"rank {r} of {group.size}: classes {c.tolist()!r} differ from rank 0's "
                            f"{every[0].tolist()!r}; pass the same classes everywhere"))
                union = cls
                kind = BINARY if len(cls) == 2 else MULTICLASS
            T = group.agree(lambda: _encode(clf, y_np, Xh.shape[0], union), "encoding y")
            net, state, _ = group.agree(lambda: clf._fresh(p, Xh.shape[1], T.shape[1]), "building the network")
            _same_start(group, net, state, None)
            scaler = _global_scaler(group, Xh, net.dtype) if clf.standardize else None
            source = _source(group, net, Xh, T, p["batch_size"], scaler)
            opt = clf._optimizer_for(net, p, _steps_as_rows(source, p))
            _train_and_commit(clf, group, net, opt, state, kind, union, source, p, epochs, None, monitor, names, scaler)
            return clf

        def more() -> tuple:
            clf._check_same_setup(p)
            if names is not None or not hasattr(X, "read_all"):  # a data set's names are checked by reading
                check_feature_names(clf, X)
            Xh = clf._host_X(X_, clf.n_features_in_)
            if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), clf.classes_):
                raise ValueError(f"classes {np.unique(classes).tolist()!r} differ from the fitted classes_ "
                                 f"{clf.classes_.tolist()!r}")
            y_np = _labels_array(y_)
            if clf._label_kind == MULTILABEL and (y_np is None or y_np.ndim != 2):
                raise ValueError("the model was fitted on a multi-label indicator matrix; y must be 2-D")
            kind, _, T = clf._encode(y_np, Xh.shape[0], clf.classes_)
            if kind != clf._label_kind:
                raise ValueError(f"y is {kind} but the model was fitted on {clf._label_kind} targets")
            return Xh, T

        Xh, T = group.agree(more, "checking X and y")
        _adopt(group, clf)
        net, opt, state = clf.net_, clf._optimizer, clf._state
        start = Snapshot(net._engine, opt)
        start.capture(state)
        try:
            source = _source(group, net, Xh, T, p["batch_size"], clf._scaler)
            opt.learning_rate = clf._learning_rate(p, _steps_as_rows(source, p))
            opt.weight_decay = p["weight_decay"]
            if clf.optimizer == "momentum":
                opt.momentum = p["momentum"]
            _train_and_commit(clf, group, net, opt, state, clf._label_kind, clf.classes_, source, p, epochs,
                              None, monitor, getattr(clf, "feature_names_in_", None), clf._scaler)
        except BaseException:
            start.restore(state)  # every rank rolls back together (errors here are raised everywhere)
            raise
    return clf


def save(clf: Any, path: Any) -> None:
    """``MLPClassifier.save`` of a data-parallel model, on every rank: rank 0 writes the one file
    (atomically, with every rank's shuffle generator in ``train_state.rank_rngs``); the others wait
    and raise the same error if writing failed."""
    from .persistence import save as write

    group = clf._group
    with group.guard():
        group.agree(clf._check_fitted, "checking the model")
        clf._state.rank_rngs = group.allgather(rng_to_dict(clf._state.rng), "gathering the shuffle generators")
        group.agree(lambda: write(clf, path) if group.rank == 0 else None, f"saving {os.fspath(path)}")
