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

Memory is bounded by the buffers, not the file: ``prefetch + 1`` buffers, allocated once per
``BatchReader`` (the one being cut into batches and up to ``prefetch`` filled ahead), each with
room for the carried rows and the ``shuffle_buffer`` largest chunks.

Arrow and NumPy release the GIL while they read and convert. An error in the thread is raised in
the consumer, at the batch where it happened. Closing the iterator (``close()``, leaving a ``for``
loop with ``break``, an exception or KeyboardInterrupt in the loop, or dropping the last
reference) stops the thread before it returns: the thread checks a stop flag between chunks and
while it waits for a free buffer or for room in the queue.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cpu_steps import take_rows

if TYPE_CHECKING:
    from .dataset import Dataset

THREAD_NAME = "bp_gpu.data.batches"

_DONE = object()
_WAIT = 0.05  # seconds between looks at the stop flag while waiting


class _Stopped(Exception):
    """The consumer went away: the reader unwinds quietly."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    return int(v)


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
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle_buffer: int = 4,
        dtype: np.dtype | type = np.float32,
        prefetch: int = 1,
        transform: Callable[[np.ndarray], None] | None = None,
        encode: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.batch_size = _positive_int("batch_size", batch_size)
        self.shuffle_buffer = _positive_int("shuffle_buffer", shuffle_buffer)
        self.prefetch = _positive_int("prefetch", prefetch)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {dt}")
        self.dataset, self.dtype = dataset, dt
        self.transform, self.encode = transform, encode
        self._X: list[np.ndarray] = []  # the shuffle buffers (rows, d), allocated on first use
        self._T: list[np.ndarray | None] = []  # their encoded labels (rows, O)
        self._active: weakref.ref | None = None

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
        epoch = self._consume(order, seed)
        # A weak reference: dropping the caller's last reference must still finalise the epoch at
        # once (and so stop its thread), which a reference held here would prevent.
        self._active = weakref.ref(epoch)
        return epoch

    # -- the two threads --------------------------------------------------------------------------
    def _consume(self, order: np.ndarray, seed: int) -> Iterator[tuple[np.ndarray, Any, np.ndarray]]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        free = [threading.Event() for _ in range(self.prefetch + 1)]  # set: the buffer may be refilled
        for e in free:
            e.set()
        stop = threading.Event()
        # The thread gets the queue and the flags, never this generator: dropping the generator's
        # last reference then finalises it at once, which runs the `finally` below and stops it.
        thread = threading.Thread(target=self._produce, args=(order, seed, q, free, stop), name=THREAD_NAME,
                                  daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                b, X, Y, batches = item
                for idx in batches:
                    yield X, Y, idx
                free[b].set()
        finally:
            stop.set()
            thread.join()

    def _allocate(self) -> None:
        ds = self.dataset
        rows = np.sort(ds.chunk_rows())
        capacity = self.batch_size - 1 + int(rows[-self.shuffle_buffer:].sum()) if len(rows) else 0
        if not self._X or self._X[0].shape[0] < capacity:
            self._X = [np.empty((capacity, ds.n_features), self.dtype) for _ in range(self.prefetch + 1)]
            self._T = [None] * (self.prefetch + 1)

    def _store_labels(self, b: int, y: np.ndarray, lo: int, hi: int) -> None:
        T = self.encode(y)
        if self._T[b] is None or self._T[b].shape[1] != T.shape[1]:
            self._T[b] = np.empty((self._X[b].shape[0], T.shape[1]), self.dtype)
        self._T[b][lo:hi] = T

    def _produce(self, order: np.ndarray, seed: int, q: queue.Queue, free: list[threading.Event],
                 stop: threading.Event) -> None:
        try:
            self._allocate()
            ds, bs = self.dataset, self.batch_size
            shuffle = np.random.default_rng(seed)
            has_y, raw = ds.target is not None, self.encode is None
            rows = ds.chunk_rows()
            chunks = iter(order)
            prev, carry, carry_y = None, np.empty(0, np.int64), None  # rows of buffer `prev` to carry
            b, last = 0, False
            while not last:
                _wait(free[b], stop)
                free[b].clear()
                X, c = self._X[b], len(carry)
                if c:  # the carried rows first (buffer `prev` is only read, by both threads)
                    X[:c] = self._X[prev][carry]
                    if has_y and not raw:
                        if self._T[b] is None:
                            self._T[b] = np.empty_like(self._T[prev])
                        self._T[b][:c] = self._T[prev][carry]
                pos, ys = c, ([carry_y] if c and has_y and raw else [])
                for _ in range(self.shuffle_buffer):
                    if stop.is_set():
                        raise _Stopped
                    i = next(chunks, None)
                    if i is None:
                        break
                    end = pos + int(rows[i])
                    chunk = ds._read_into(int(i), X[pos:end])
                    if self.transform is not None:
                        self.transform(X[pos:end])
                    if has_y:
                        if raw:
                            ys.append(chunk.y)
                        else:
                            self._store_labels(b, chunk.y, pos, end)
                    pos = end
                Y = None
                if has_y:
                    Y = (np.concatenate(ys) if ys else None) if raw else self._T[b]
                if pos == c:  # no chunk left: the carried rows are the last batch
                    batches, last = ([np.arange(c)] if c else []), True
                else:
                    perm = shuffle.permutation(pos)
                    full = pos - pos % bs
                    batches = [perm[s:s + bs] for s in range(0, full, bs)]
                    carry = perm[full:]
                    carry_y = Y[carry] if has_y and raw else None
                _put(q, (b, X[:pos], None if Y is None else Y[:pos], batches), stop)
                prev, b = b, (b + 1) % len(free)
            _put(q, _DONE, stop)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: B036 - every failure must reach the consumer, not die here
            try:
                _put(q, _Failure(exc), stop)
            except _Stopped:
                return


def epoch_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    rng: np.random.Generator,
    shuffle_buffer: int = 4,
    dtype: np.dtype | type = np.float32,
    prefetch: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """One epoch of ``(X (B, d) C-contiguous dtype, y (B,) or None)`` batches of ``dataset``, each
    a new array, in the order the module docstring defines. ``rng`` is a ``numpy.random.Generator``."""
    reader = BatchReader(dataset, batch_size, shuffle_buffer=shuffle_buffer, dtype=dtype, prefetch=prefetch)
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
    while not event.wait(_WAIT):
        if stop.is_set():
            raise _Stopped


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=_WAIT)
            return
        except queue.Full:
            continue
