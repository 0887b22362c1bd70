"""Data-parallel training over MPI processes: ``MLPClassifier(distributed=True)`` under ``mpiexec``.

Every process (rank) of ``MPI.COMM_WORLD`` holds its own rows (a shard) and a replica of the same
network. This module is what is really distributed: the MPI process group (``ProcessGroup``, with
its deadlines and aborts), the gradient all-reduces (MPI, staged through host memory, NCCL) and the
sharded batch source. It knows nothing of the classifier: training has one path
(``bp_gpu.pipeline``), which calls a process group's collectives (``bp_gpu.group`` describes the
interface; a single process is ``LocalGroup``, a group of one), and the epoch loop
(``bp_gpu.train.train``) sees a batch source whose ``run_epoch`` does the all-reduces.

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
  Then one all-gather of every rank's shuffle generator: the model keeps them
  (``TrainState.rank_rngs``), so that saving is a local call (``if rank == 0: clf.save(path)``)
  whose file resumes every rank exactly.

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
hanging in ``MPI_Finalize`` (``sys.excepthook``, as ``python -m mpi4py`` does: mpi4py's
documentation, "mpi4py.run", explains the deadlock an unhandled exception causes under its automatic
``MPI_Finalize``, https://mpi4py.readthedocs.io/en/stable/mpi4py.run.html).
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
from .group import LocalGroup
from .train import TrainingDivergedError, rng_from_dict, rng_to_dict

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
# After Ctrl-C with ProcessGroup.interrupt == "keep", how long the other ranks wait for rank 0 to save
# the model and end the job before they end it.
INTERRUPT_GRACE_S = 60.0


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
    split), ``comm`` (a private duplicate of ``comm``, so user messages never mix with ours). It has
    the interface ``bp_gpu.group`` describes, which the training pipeline calls.
    """

    # A data set given to fit is this process's shard, read into memory: each rank then permutes its
    # rows as arrays are permuted, so N ranks step exactly as one process on the union of their
    # batches (the documented order; a shard streamed chunk by chunk would draw another).
    holds_shards_in_memory = True
    # Ctrl-C (mpiexec forwards it to every rank): "abort" ends the job at once; "keep" (bp-gpu train)
    # stops rank 0's epoch loop at the last completed epoch for it to save, then end the job.
    interrupt = "abort"

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
        self._abort_nccl()
        self.MPI.COMM_WORLD.Abort(status)
        # MPICH's MPI_Abort can return (it asks the process manager to kill the job; seen here with
        # MPICH 5.0: code after Abort ran before the kill arrived): this process must not go on.
        os._exit(status)

    def _abort_nccl(self) -> None:
        """Abort the NCCL communicator, if any: its pending all-reduces end (ncclCommAbort)."""
        if self._nccl is not None:
            # ncclCommAbort releases the GIL and may wait on peers: never let it hold up what follows.
            t = threading.Thread(target=self._nccl.abort, daemon=True)
            t.start()
            t.join(1.0)
            self._nccl = None

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
        if self.interrupt == "keep":
            if self.rank == 0:
                # The epoch loop (bp_gpu.train) keeps the last completed epoch and returns; the caller
                # saves it and ends the job. A second Ctrl-C ends it at once. An all-reduce that waits
                # for the others on the GPU would hold up the stream the save copies on: NCCL goes first.
                self.interrupt = "abort"
                self._abort_nccl()
                raise KeyboardInterrupt
            # The others wait in their collectives for rank 0 to end the job; if it cannot, they do.
            timer = threading.Timer(INTERRUPT_GRACE_S, self.abort, (130,))
            timer.daemon = True
            timer.start()
            return
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

    # -- what the training pipeline asks of a group (bp_gpu.group) ---------------------------------------
    def start(self, net: Any, state: Any, split_rng: np.random.Generator | None) -> np.random.Generator | None:
        """Rank 0's initial weights and generators everywhere (each rank's generator jumped by its rank);
        returns this rank's early-stopping split generator."""
        engine = net._engine
        host = np.ascontiguousarray(V.to_numpy(engine.params))
        self.bcast_array(host, "broadcasting the initial weights")
        engine.params[...] = engine.xp.asarray(host)
        engine.refresh_weight_copies()  # a mixed-precision network's rounded weights follow (bp_gpu.precision)
        rng0, split0 = self.bcast((state.rng.bit_generator.state,
                                   None if split_rng is None else split_rng.bit_generator.state),
                                  "broadcasting the shuffle generator")
        state.rng = rank_generator(_generator(rng0), self.rank)
        return None if split0 is None else rank_generator(_generator(split0), self.rank)

    def adopt(self, model: Any, params: dict[str, Any]) -> None:
        """A model this group did not train (loaded from a file): each rank takes its own shuffle
        generator from it; the world size must be the one that trained it, and every rank must hold
        the same parameters. ``params``: the estimator's hyperparameters (to rebuild the model on this
        rank's GPU)."""
        if model.group is self:
            return

        def check() -> None:
            saved = model.state.rank_rngs
            n = 1 if saved is None else len(saved)
            if n != self.size:
                raise ValueError(
                    f"this model was trained by {n} process(es), and resuming it exactly needs the shuffle "
                    f"generator of each: resume it under mpiexec -n {n} (it is running under {self.size}), or "
                    "fit a new model")
            if saved is not None and saved[0] != rng_to_dict(model.state.rng):
                raise ValueError(
                    f"this model was trained further by a single process after {n} processes saved it, so the "
                    "processes' shuffle generators in it are stale: fit a new model, or resume the file they "
                    "saved")

        self.agree(check, "checking the model to resume")
        self.agree(lambda: self._to_local_device(model, params), "moving the model to this process's GPU")
        self.check_devices()
        crc = self.gather_rows(np.array([float(params_checksum(model.net._engine))]), "comparing the models")[:, 0]
        if (crc != crc[0]).any():
            r = int(np.flatnonzero(crc != crc[0])[0])
            raise _every_rank(ValueError(
                f"rank {r} of {self.size}: the model's parameters differ from rank 0's; every process must "
                "load the same model file"))
        model.state.rng = rng_from_dict(model.state.rank_rngs[self.rank])
        model.group = self

    def _to_local_device(self, model: Any, params: dict[str, Any]) -> None:
        """A model loaded before this process chose its GPU sits on the default device: rebuild it on
        the local rank's (through the file format's arrays, as unpickling does)."""
        from .backends import simulator_enabled

        self.use_device(model.net.backend)
        if model.net.backend != "cuda" or simulator_enabled():
            return
        import cupy

        if model.net._engine.params.device.id == cupy.cuda.Device().id:
            return
        from .persistence import from_arrays, to_arrays

        _, moved = from_arrays(to_arrays(params, model), "the loaded model", params, backend="cuda")
        model.net, model.optimizer = moved.net, moved.optimizer

    def batch_source(self, local: Any, engine: Any) -> ShardedSource:
        """``local`` (this rank's batches) stepped as one global epoch, each step's gradient all-reduced."""
        return ShardedSource(self, local, make_reducer(self, engine))

    def after_training(self, state: Any, source: ShardedSource) -> None:
        """The model keeps every rank's shuffle generator (gathered at the end of each epoch)."""
        if source.rank_rngs is not None:
            state.rank_rngs, state.rank = list(source.rank_rngs), self.rank


_WORLD: ProcessGroup | None = None


def world_group() -> ProcessGroup | LocalGroup:
    """The group of every process of ``MPI.COMM_WORLD`` (made on first call, collectively), or a
    ``LocalGroup`` when the world has a single process (a group of one). Raises ImportError with the
    install command when mpi4py is missing."""
    global _WORLD
    MPI = _mpi()
    if MPI.COMM_WORLD.Get_size() == 1:
        return LocalGroup()
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
    row count; ``steps_per_epoch`` the steps of an epoch; ``global_sizes[k]`` = B(k); ``rank_rngs``
    every rank's shuffle generator after the last epoch (``rng_to_dict``), None before the first."""

    def __init__(self, group: ProcessGroup, local: Any, reducer: Reducer) -> None:
        self.group, self.local, self.reduce = group, local, reducer
        shapes = group.allgather((int(local.n_rows), int(local.batch_size)), "gathering the shard sizes")
        per_rank = [batch_sizes(n, b) for n, b in shapes]
        self.shard_rows = [n for n, _ in shapes]
        self.n_rows = sum(self.shard_rows)
        self.steps_per_epoch = max(len(s) for s in per_rank)
        self.global_sizes = [sum(s[k] for s in per_rank if k < len(s)) for k in range(self.steps_per_epoch)]
        self.local_sizes = per_rank[group.rank]
        self.scales = [1.0 / B for B in self.global_sizes]
        self.epochs_run = 0
        self.rank_rngs: list[dict[str, Any]] | None = None

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
        staged = getattr(self.local, "staged", False)  # see bp_gpu.train.ResidentBatches
        batches = iter(self.local.epoch(rng))
        try:
            for k in range(self.steps_per_epoch):
                if k < mine:
                    Xb, Tb = next(batches)
                    if Xb.shape[0] != self.local_sizes[k]:
                        raise RuntimeError(f"the local batch source gave {Xb.shape[0]} rows at step {k}; "
                                           f"{self.local_sizes[k]} were planned")
                    net._step(Xb, Tb, optimizer, self.scales[k], reduce_grads=self.reduce, staged=staged)
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
        self.rank_rngs = self.group.allgather(rng_to_dict(rng), "gathering the shuffle generators")
        return float(table[:, 0].sum() / table[:, 1].sum())


