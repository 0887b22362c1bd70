"""Epochs of shuffled host batches from a data set, read by a background thread.

The order, exactly (reproducible from the generator passed in):

1. In the calling thread, when an epoch is started (``epoch_batches``, ``BatchReader.epoch``):
   ``order = rng.permutation(n_chunks)``, then ``seed = rng.integers(2**63)``. Nothing else touches
   ``rng``, so the caller may go on using it while the thread runs.
2. The producer thread reads the chunks in ``order``, ``shuffle_buffer`` chunks at a time. Each
   buffer is the rows left over from the previous buffer (fewer than ``batch_size``) followed by
   the rows of its chunks; its rows are permuted with
   ``perm = np.random.default_rng(seed).permutation(len(buffer))`` (one generator for the epoch,
   drawing once per buffer), and batches are cut from the front of the permuted rows:
   ``buffer[perm[0:B]], buffer[perm[B:2B]], ...``. The rows of an incomplete last batch are carried
   to the next buffer.
3. The last batch of the epoch holds what is left: between 1 and ``batch_size`` rows.

Memory is bounded by the buffer, not the file. A ``BatchReader`` allocates the buffer once (room
for the carried rows and the ``shuffle_buffer`` largest chunks) and reads every chunk straight
into it (``Dataset._read_into``), so a row is copied twice on its way to a batch: once from the
file into the buffer (decoded and converted there), once from the buffer into its batch. Batches
gathered from the buffer wait in a queue of ``prefetch``; the consumer holds one more. With
``reuse=True`` the batches themselves live in a ring of ``prefetch + 2`` preallocated slots (the
queued ones, the consumer's and the one being written), so an epoch allocates nothing; each batch
is then valid only until the next one is asked for.

The thread reads and decodes (Arrow and NumPy release the GIL while they do; the row gather is a
Numba loop that releases it too) while the consumer trains. An error in the thread is raised in
the consumer, at the batch where it happened. Closing the iterator (``close()``, leaving a ``for``
loop with ``break``, an exception or KeyboardInterrupt in the loop, or dropping the last
reference) stops the thread before it returns: the thread checks a stop flag between chunks and
while waiting for room in the queue.
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


class _Stopped(Exception):
    """The consumer went away: the producer unwinds quietly."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    return int(v)


class BatchReader:
    """Epochs of ``(X (B, d), y)`` batches of ``dataset`` in the order the module docstring defines,
    from memory allocated once for every epoch.

    ``dtype``: float32 or float64, the features' type. ``transform(X)``, if given, changes each
    chunk's features in place right after they are read (the classifier's standardisation).
    ``encode(y) -> T``, if given, turns each chunk's raw labels into a ``(rows, O)`` array (the
    classifier's 0/1 targets), and batches then carry ``T (B, O)`` of ``dtype`` instead of the raw
    labels. ``reuse``: batches are views into a ring of preallocated slots, each valid until the
    next batch is requested (see the module docstring); otherwise every batch is a new array.
    Both functions run in the reader's thread.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle_buffer: int = 4,
        dtype: np.dtype | type = np.float32,
        prefetch: int = 2,
        transform: Callable[[np.ndarray], None] | None = None,
        encode: Callable[[np.ndarray], np.ndarray] | None = None,
        reuse: bool = False,
    ) -> None:
        self.batch_size = _positive_int("batch_size", batch_size)
        self.shuffle_buffer = _positive_int("shuffle_buffer", shuffle_buffer)
        self.prefetch = _positive_int("prefetch", prefetch)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {dt}")
        self.dataset, self.dtype = dataset, dt
        self.transform, self.encode, self.reuse = transform, encode, bool(reuse)
        self._X: np.ndarray | None = None  # the shuffle buffer (rows, d), allocated on first use
        self._T: np.ndarray | None = None  # encoded labels of the buffer's rows (rows, O)
        self._ring: list[list[np.ndarray | None]] = []  # reuse: [X slot, T slot] per slot
        self._active: weakref.ref | None = None

    def epoch(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """One epoch of batches; draws its chunk order and shuffle seed from ``rng`` now. Starting
        an epoch closes the reader's previous one (they share the buffers)."""
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
    def _consume(self, order: np.ndarray, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        # The thread gets the queue and the flag, never this generator: dropping the generator's last
        # reference then finalises it at once, which runs the `finally` below and stops the thread.
        thread = threading.Thread(target=self._produce, args=(order, seed, q, stop), name=THREAD_NAME, daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            thread.join()

    def _allocate(self) -> None:
        ds = self.dataset
        rows = np.sort(ds.chunk_rows())
        capacity = self.batch_size - 1 + int(rows[-self.shuffle_buffer:].sum()) if len(rows) else 0
        if self._X is None or self._X.shape[0] < capacity:
            self._X = np.empty((capacity, ds.n_features), self.dtype)
            self._T = None
        if self.reuse and not self._ring:
            self._ring = [[np.empty((self.batch_size, ds.n_features), self.dtype), None]
                          for _ in range(self.prefetch + 2)]

    def _batch(self, n: int, idx: np.ndarray, y: np.ndarray | None, turn: int) -> tuple[np.ndarray, Any]:
        """The rows ``idx`` of the buffer's first ``n`` rows, as a batch (in ring slot ``turn``)."""
        B, has_y = len(idx), self.dataset.target is not None
        if self.reuse:
            slot = self._ring[turn % len(self._ring)]
            Xb = slot[0][:B]
        else:
            Xb = np.empty((B, self.dataset.n_features), self.dtype)
        take_rows(self._X[:n], idx, Xb)
        if not has_y:
            return Xb, None
        if self.encode is None:
            return Xb, y[idx]
        T = self._T
        if self.reuse:
            if slot[1] is None:
                slot[1] = np.empty((self.batch_size, T.shape[1]), self.dtype)
            Tb = slot[1][:B]
        else:
            Tb = np.empty((B, T.shape[1]), self.dtype)
        take_rows(T[:n], idx, Tb)
        return Xb, Tb

    def _store_labels(self, y: np.ndarray, lo: int, hi: int) -> None:
        T = self.encode(y)
        if self._T is None or self._T.shape[1] != T.shape[1]:
            self._T = np.empty((self._X.shape[0], T.shape[1]), self.dtype)
        self._T[lo:hi] = T

    def _produce(self, order: np.ndarray, seed: int, q: queue.Queue, stop: threading.Event) -> None:
        try:
            self._allocate()
            ds, bs, X = self.dataset, self.batch_size, self._X
            shuffle = np.random.default_rng(seed)
            has_y, raw = ds.target is not None, self.encode is None
            rows = ds.chunk_rows()
            carry = 0  # rows carried over, at the front of the buffer
            carry_y = None
            chunks = iter(order)
            turn = 0
            while True:
                pos, ys = carry, ([carry_y] if carry_y is not None else [])
                for _ in range(self.shuffle_buffer):
                    if stop.is_set():
                        raise _Stopped
                    i = next(chunks, None)
                    if i is None:
                        break
                    end = pos + int(rows[i])
                    c = ds._read_into(int(i), X[pos:end])
                    if self.transform is not None:
                        self.transform(X[pos:end])
                    if has_y:
                        if raw:
                            ys.append(c.y)
                        else:
                            self._store_labels(c.y, pos, end)
                    pos = end
                if pos == carry:  # no chunk left: the carried rows are the last batch
                    break
                y = np.concatenate(ys) if has_y and raw else None
                perm = shuffle.permutation(pos)
                full = pos - pos % bs
                for s in range(0, full, bs):
                    _put(q, self._batch(pos, perm[s:s + bs], y, turn), stop)
                    turn += 1
                rest = perm[full:]
                carry = len(rest)
                X[:carry] = X[rest]  # the fancy index copies first, so the overlap is safe
                if y is not None:
                    carry_y = y[rest]
                elif has_y:
                    self._T[:carry] = self._T[rest]
            if carry:
                _put(q, self._batch(carry, np.arange(carry), carry_y, turn), stop)
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
    prefetch: int = 2,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """One epoch of ``(X (B, d) C-contiguous dtype, y (B,) or None)`` batches of ``dataset``, each
    a new array, in the order the module docstring defines. ``rng`` is a ``numpy.random.Generator``."""
    reader = BatchReader(dataset, batch_size, shuffle_buffer=shuffle_buffer, dtype=dtype, prefetch=prefetch)
    return reader.epoch(rng)


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            continue
