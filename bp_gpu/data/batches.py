"""Epochs of shuffled batches from a data set: a background thread reads, the consumer gathers.

The order, exactly (reproducible from the generator passed in):

1. In the calling thread, when an epoch is started (``epoch_batches``, ``BatchReader.epoch``):
   ``order = rng.permutation(n_chunks)``, then ``seed = rng.integers(2**63)``. Nothing else touches
   ``rng``, so the caller may go on using it while the thread runs.
2. The reader thread reads the chunks in ``order``, ``shuffle_buffer`` chunks at a time. Each
   buffer is the rows left over from the previous buffer (fewer than ``batch_size``) followed by
   the rows of its chunks; its rows are permuted with
   ``perm = np.random.default_rng(seed).permutation(len(buffer))`` (one generator for the epoch,
   drawing once per buffer), and batches are cut from the front of the permuted rows:
   ``buffer[perm[0:B]], buffer[perm[B:2B]], ...``. The rows of an incomplete last batch are carried
   to the next buffer.
3. The last batch of the epoch holds what is left: between 1 and ``batch_size`` rows.

Who does what. The thread fills whole shuffle buffers: it reads every chunk straight into the
buffer (``Dataset._read_into``: decoded and converted there, one copy from the file), applies
``transform`` and ``encode`` (the classifier's standardisation and 0/1 targets), draws the
buffer's permutation and hands the filled buffer over. The consumer cuts the batches from it,
``X[idx]`` with ``idx`` a slice of the permutation: for training, a gather into the engine's batch
buffer (or a GPU's pinned staging buffer), the same one gather per batch as training from arrays
in memory. So the threads meet once per buffer, not once per batch, and the thread's work (reading,
decoding, checking, converting) overlaps the steps.

Reading ahead (``BatchReader``'s ``read_ahead``, on in training): once the thread has queued an
epoch's last buffer, it goes on with the epoch the caller's generator would draw next (it holds a
copy of the generator taken right after this epoch's draws), into the buffers the consumer hands
back, so the next epoch starts on a filled buffer instead of waiting for a buffer's reads and
decoding. When the next epoch starts, its real draws are compared with those: equal (nothing else
drew from the generator in between), the thread's work is used; different, it is dropped and the
epoch read from its start. The batches are the same either way.

Memory is bounded by the buffers, not the file: ``prefetch + 1`` buffers, allocated once per
``BatchReader`` (the one being cut into batches and up to ``prefetch`` filled ahead), each with
room for the carried rows and the ``shuffle_buffer`` largest chunks.

Arrow and NumPy release the GIL while they read and convert. An error in the thread is raised in
the consumer, at the batch where it happened. Closing the iterator (``close()``, leaving a ``for``
loop with ``break``, an exception or KeyboardInterrupt in the loop, or dropping the last
reference) stops the thread before it returns: the thread checks a stop flag between chunks and
is woken if it waits for a free buffer. So does ``BatchReader.close()`` (or dropping the reader),
which also stops a thread reading the next epoch ahead.
"""

from __future__ import annotations

import copy
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from ..cpu_steps import take_rows


class Chunked(Protocol):
    """What the reader needs of a ``bp_gpu.data.Dataset`` (whose ``batches`` calls into this module,
    so this module names the interface rather than importing the class)."""

    n_chunks: int
    n_features: int
    target: str | None

    def chunk_rows(self) -> np.ndarray: ...

    def _read_into(self, i: int, out: np.ndarray) -> Any: ...

THREAD_NAME = "bp_gpu.data.batches"

_DONE = object()


class _Stopped(Exception):
    """The consumer went away: the reader unwinds quietly."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    return int(v)


class _EpochStart:
    """The head of an epoch's items in a stream's queue: the order and seed it was read with."""

    __slots__ = ("order", "seed")

    def __init__(self, order: np.ndarray, seed: int) -> None:
        self.order, self.seed = order, seed

    def matches(self, order: np.ndarray, seed: int) -> bool:
        return self.seed == seed and np.array_equal(self.order, order)


class _Fill:
    """What the reader thread needs to fill buffers, and nothing that refers back to the
    ``BatchReader`` (so dropping the reader is seen at once, and stops its thread)."""

    def __init__(self, reader: BatchReader) -> None:
        self.dataset, self.batch_size, self.shuffle_buffer = reader.dataset, reader.batch_size, reader.shuffle_buffer
        self.transform, self.encode = reader.transform, reader.encode
        self.X, self.T = reader._X, reader._T  # the reader's buffer lists, shared

    def store_labels(self, b: int, y: np.ndarray, lo: int, hi: int) -> None:
        T = self.encode(y)
        if self.T[b] is None or self.T[b].shape[1] != T.shape[1]:
            self.T[b] = np.empty((self.X[b].shape[0], T.shape[1]), self.X[b].dtype)
        self.T[b][lo:hi] = T


class _Stream:
    """One reader thread with its queue and flags: the epoch it was started for, then (given
    ``ahead``, a copy of the caller's generator after that epoch's draws) the epochs that generator
    draws next, one after the other, for as long as the buffers are handed back."""

    def __init__(self, fill: _Fill, order: np.ndarray, seed: int, ahead: np.random.Generator | None) -> None:
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.free = [threading.Event() for _ in fill.X]  # set: the buffer may be refilled
        for e in self.free:
            e.set()
        self.stop = threading.Event()
        self.reads_ahead = ahead is not None
        self.between_epochs = False  # the last epoch handed out was read to its end
        # The thread gets the queue, the flags and the fill, never the reader or the consumer's
        # generator: dropping either's last reference is then seen at once (and stops it).
        self.thread = threading.Thread(target=_produce, args=(fill, order, seed, ahead, self.q, self.free, self.stop),
                                       name=THREAD_NAME, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        for e in self.free:  # wakes a thread waiting for a buffer
            e.set()
        if threading.current_thread() is not self.thread:  # a finaliser may run in any thread
            self.thread.join()


class BatchReader:
    """Epochs of batches of ``dataset`` in the order the module docstring defines, from buffers
    allocated once for every epoch.

    ``epoch(rng)`` yields ``(X, Y, idx)``: the batch is ``X[idx]`` (features, ``dtype``) with labels
    ``Y[idx]``, where ``X`` (n, d) and ``Y`` are the current shuffle buffer's and ``idx`` (B,) int64
    row indices into them; all three are valid until the next batch is requested. ``Y`` is
    ``encode``'s targets (n, O) of ``dtype`` when ``encode`` is given, else the raw labels, or
    ``None`` without a target column. ``transform(X)``, if given, changes each chunk's features in
    place right after they are read. ``encode(y) -> T`` turns each chunk's raw labels into a
    ``(rows, O)`` array. Both run in the reader's thread.

    ``read_ahead``: once an epoch has been read to its end, the thread goes on with the epoch that
    ``rng`` would draw next (from a copy of it), so the next epoch's first buffer is ready when it
    starts instead of costing a buffer's read and decode before its first batch. The next
    ``epoch(rng)`` draws as always and uses what was read ahead only if its draws are those (else
    it is dropped and read again): the batches are the same either way. ``close()`` stops it.
    """

    def __init__(
        self,
        dataset: Chunked,
        batch_size: int,
        *,
        shuffle_buffer: int = 4,
        dtype: np.dtype | type = np.float32,
        prefetch: int = 1,
        transform: Callable[[np.ndarray], None] | None = None,
        encode: Callable[[np.ndarray], np.ndarray] | None = None,
        read_ahead: bool = True,
    ) -> None:
        self.batch_size = _positive_int("batch_size", batch_size)
        self.shuffle_buffer = _positive_int("shuffle_buffer", shuffle_buffer)
        self.prefetch = _positive_int("prefetch", prefetch)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {dt}")
        self.dataset, self.dtype = dataset, dt
        self.transform, self.encode = transform, encode
        self.read_ahead = bool(read_ahead)
        self._X: list[np.ndarray] = []  # the shuffle buffers (rows, d), allocated on first use
        self._T: list[np.ndarray | None] = []  # their encoded labels (rows, O)
        self._active: weakref.ref | None = None
        self._stream: list[_Stream | None] = [None]  # a list, so the finaliser can stop it without `self`
        weakref.finalize(self, _stop_stream, self._stream)

    def epoch(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, Any, np.ndarray]]:
        """One epoch of ``(X, Y, idx)``; draws its chunk order and shuffle seed from ``rng`` now.
        Starting an epoch closes the reader's previous one (they share the buffers)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
        previous = self._active() if self._active is not None else None
        if previous is not None:
            previous.close()
        order = rng.permutation(self.dataset.n_chunks)
        seed = int(rng.integers(2**63))
        stream = self._stream[0]
        if stream is not None:
            head = stream.q.get() if stream.between_epochs else None  # put right after the last one's end
            if not (isinstance(head, _EpochStart) and head.matches(order, seed)):
                stream.close()
                stream = None
        if stream is None:
            self._allocate()
            # Not for a data set of no chunks: its epochs hold no buffer, so nothing would hold the
            # thread back from drawing epoch after epoch.
            ahead = copy.deepcopy(rng) if self.read_ahead and self.dataset.n_chunks else None
            stream = self._stream[0] = _Stream(_Fill(self), order, seed, ahead)
            head = stream.q.get()
        stream.between_epochs = False
        epoch = self._consume(stream)
        # A weak reference: dropping the caller's last reference must still finalise the epoch at
        # once (and so stop its thread), which a reference held here would prevent.
        self._active = weakref.ref(epoch)
        return epoch

    def close(self) -> None:
        """Stops the reader's thread (the current epoch's, or one reading ahead) and waits for it."""
        previous = self._active() if self._active is not None else None
        if previous is not None:
            previous.close()
        _stop_stream(self._stream)

    def _consume(self, stream: _Stream) -> Iterator[tuple[np.ndarray, Any, np.ndarray]]:
        try:
            while True:
                item = stream.q.get()
                if item is _DONE:
                    stream.between_epochs = True
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                b, X, Y, batches = item
                for idx in batches:
                    yield X, Y, idx
                stream.free[b].set()
        finally:
            if not (stream.between_epochs and stream.reads_ahead):
                _stop_stream(self._stream)

    def _allocate(self) -> None:
        ds = self.dataset
        rows = np.sort(ds.chunk_rows())
        capacity = self.batch_size - 1 + int(rows[-self.shuffle_buffer:].sum()) if len(rows) else 0
        if not self._X or self._X[0].shape[0] < capacity:
            self._X = [np.empty((capacity, ds.n_features), self.dtype) for _ in range(self.prefetch + 1)]
            self._T = [None] * (self.prefetch + 1)


def _stop_stream(holder: list[_Stream | None]) -> None:
    stream, holder[0] = holder[0], None
    if stream is not None:
        stream.close()


def _produce(fill: _Fill, order: np.ndarray, seed: int, ahead: np.random.Generator | None,
             q: queue.SimpleQueue, free: list[threading.Event], stop: threading.Event) -> None:
    """The reader thread: the epoch of ``order`` and ``seed``, then, with ``ahead``, the epochs it
    draws, each as its ``_EpochStart``, its buffers and ``_DONE``."""
    try:
        b = 0
        while True:
            q.put(_EpochStart(order, seed))
            b = _produce_epoch(fill, order, seed, q, free, stop, b)
            q.put(_DONE)
            if ahead is None:
                return
            order = ahead.permutation(fill.dataset.n_chunks)
            seed = int(ahead.integers(2**63))
    except _Stopped:
        return
    except BaseException as exc:  # noqa: B036 - every failure must reach the consumer, not die here
        q.put(_Failure(exc))


def _produce_epoch(fill: _Fill, order: np.ndarray, seed: int, q: queue.SimpleQueue, free: list[threading.Event],
                   stop: threading.Event, b: int) -> int:
    """Fills and queues one epoch's buffers, the first one being buffer ``b``; returns the next."""
    ds, bs = fill.dataset, fill.batch_size
    shuffle = np.random.default_rng(seed)
    has_y, raw = ds.target is not None, fill.encode is None
    rows = ds.chunk_rows()
    prev, carry, carry_y = None, np.empty(0, np.int64), None  # rows of buffer `prev` to carry
    k, n = 0, len(order)
    while k < n:
        _wait(free[b], stop)
        free[b].clear()
        X, c = fill.X[b], len(carry)
        if c:  # the carried rows first (buffer `prev` is only read, by both threads)
            X[:c] = fill.X[prev][carry]
            if has_y and not raw:
                if fill.T[b] is None:
                    fill.T[b] = np.empty_like(fill.T[prev])
                fill.T[b][:c] = fill.T[prev][carry]
        pos, ys = c, ([carry_y] if c and has_y and raw else [])
        for i in order[k:k + fill.shuffle_buffer]:
            if stop.is_set():
                raise _Stopped
            end = pos + int(rows[i])
            chunk = ds._read_into(int(i), X[pos:end])
            if fill.transform is not None:
                fill.transform(X[pos:end])
            if has_y:
                if raw:
                    ys.append(chunk.y)
                else:
                    fill.store_labels(b, chunk.y, pos, end)
            pos = end
        k = min(k + fill.shuffle_buffer, n)
        Y = None
        if has_y:
            Y = (np.concatenate(ys) if ys else None) if raw else fill.T[b]
        perm = shuffle.permutation(pos)
        # The epoch's last buffer ends with its ragged batch: the rows that would be carried, in
        # the order they would have been carried, so that the next epoch's first buffer may be
        # filled while this one is cut into batches.
        full = pos - pos % bs if k < n else pos
        batches = [perm[s:s + bs] for s in range(0, full, bs)]
        carry = perm[full:]
        carry_y = Y[carry] if has_y and raw and k < n else None
        if stop.is_set():
            raise _Stopped
        q.put((b, X[:pos], None if Y is None else Y[:pos], batches))
        prev, b = b, (b + 1) % len(free)
    return b


def epoch_batches(
    dataset: Chunked,
    batch_size: int,
    *,
    rng: np.random.Generator,
    shuffle_buffer: int = 4,
    dtype: np.dtype | type = np.float32,
    prefetch: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """One epoch of ``(X (B, d) C-contiguous dtype, y (B,) or None)`` batches of ``dataset``, each
    a new array, in the order the module docstring defines. ``rng`` is a ``numpy.random.Generator``."""
    reader = BatchReader(dataset, batch_size, shuffle_buffer=shuffle_buffer, dtype=dtype, prefetch=prefetch,
                         read_ahead=False)
    return _gathered(reader.epoch(rng))


def _gathered(rows: Iterator[tuple[np.ndarray, Any, np.ndarray]]) -> Iterator[tuple[np.ndarray, Any]]:
    try:
        for X, Y, idx in rows:
            Xb = np.empty((len(idx), X.shape[1]), X.dtype)
            take_rows(X, idx, Xb)
            yield Xb, None if Y is None else Y[idx]
    finally:
        rows.close()


def _wait(event: threading.Event, stop: threading.Event) -> None:
    event.wait()  # closing the stream sets it too
    if stop.is_set():
        raise _Stopped
