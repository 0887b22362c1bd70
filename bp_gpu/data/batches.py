"""One epoch of shuffled host batches from a data set, read by a background thread.

The order, exactly (reproducible from the generator passed in):

1. In the calling thread, when ``epoch_batches`` is called: ``order = rng.permutation(n_chunks)``,
   then ``seed = rng.integers(2**63)``. Nothing else touches ``rng``, so the caller may go on using
   it while the thread runs.
2. The producer thread reads the chunks in ``order``, ``shuffle_buffer`` chunks at a time. Each
   buffer is the rows left over from the previous buffer (fewer than ``batch_size``) followed by
   the rows of its chunks; its rows are permuted with
   ``perm = np.random.default_rng(seed).permutation(len(buffer))`` (one generator for the epoch,
   drawing once per buffer), and batches are cut from the front of the permuted rows:
   ``buffer[perm[0:B]], buffer[perm[B:2B]], ...``. The rows of an incomplete last batch are carried
   to the next buffer.
3. The last batch of the epoch holds what is left: between 1 and ``batch_size`` rows.

Memory is bounded by the buffer, not the file: while it refills, the thread holds the carried
rows, up to ``shuffle_buffer`` chunks and their concatenation (about twice the buffer), plus up to
``prefetch`` finished batches in the queue and the one the consumer holds.

The thread reads and decodes (Arrow and NumPy release the GIL while they do) while the consumer
trains. An error in the thread is raised in the consumer, at the batch where it happened.
Closing the iterator (``close()``, leaving a ``for`` loop with ``break``, an exception or
KeyboardInterrupt in the loop, or dropping the last reference) stops the thread before it returns:
the thread checks a stop flag between chunks and while waiting for room in the queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .dataset import Dataset

THREAD_NAME = "bp_gpu.data.batches"

_DONE = object()


class _Stopped(Exception):
    """The consumer went away: the producer unwinds quietly."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def epoch_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    rng: np.random.Generator,
    shuffle_buffer: int = 4,
    dtype: np.dtype | type = np.float32,
    prefetch: int = 2,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """One epoch of ``(X (B, d) C-contiguous dtype, y (B,) or None)`` batches of ``dataset``, in the
    order the module docstring defines. ``rng`` is a ``numpy.random.Generator``."""
    for name, v, lo in (("batch_size", batch_size, 1), ("shuffle_buffer", shuffle_buffer, 1),
                        ("prefetch", prefetch, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dt}")
    order = rng.permutation(dataset.n_chunks)
    seed = int(rng.integers(2**63))
    return _consume(dataset, order, seed, int(batch_size), int(shuffle_buffer), dt, int(prefetch))


def _consume(dataset, order, seed, batch_size, shuffle_buffer, dtype, prefetch):
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    # The thread gets the queue and the flag, never this generator: dropping the generator's last
    # reference then finalises it at once, which runs the `finally` below and stops the thread.
    thread = threading.Thread(
        target=_produce,
        args=(dataset, order, seed, batch_size, shuffle_buffer, dtype, q, stop),
        name=THREAD_NAME,
        daemon=True,
    )
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


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


def _produce(dataset, order, seed, batch_size, shuffle_buffer, dtype, q, stop) -> None:
    try:
        shuffle = np.random.default_rng(seed)
        has_y = dataset.target is not None
        carry_X = np.empty((0, dataset.n_features), dtype)
        carry_y = None
        chunks = dataset.iter_chunks(order, dtype=dtype)
        while True:
            Xs, ys = [carry_X], [carry_y] if carry_y is not None else []
            for _ in range(shuffle_buffer):
                if stop.is_set():
                    raise _Stopped
                c = next(chunks, None)
                if c is None:
                    break
                Xs.append(c.X)
                if has_y:
                    ys.append(c.y)
            if len(Xs) == 1:  # no chunk left: the carried rows are the last batch
                break
            X = np.concatenate(Xs)
            y = np.concatenate(ys) if has_y else None
            perm = shuffle.permutation(len(X))
            full = len(X) - len(X) % batch_size
            for s in range(0, full, batch_size):
                idx = perm[s:s + batch_size]
                _put(q, (X[idx], y[idx] if has_y else None), stop)
            rest = perm[full:]
            carry_X, carry_y = X[rest], (y[rest] if has_y else None)
        if len(carry_X):
            _put(q, (carry_X, carry_y), stop)
        _put(q, _DONE, stop)
    except _Stopped:
        return
    except BaseException as exc:  # noqa: B036 - every failure must reach the consumer, not die here
        try:
            _put(q, _Failure(exc), stop)
        except _Stopped:
            return
