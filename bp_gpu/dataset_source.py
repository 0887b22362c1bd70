"""A ``bp_gpu.data`` data set as a batch source of the epoch loop (``bp_gpu.train.train``).

``DatasetSource`` has the interface of ``bp_gpu.train.ArraySource``: ``n_rows`` and ``epoch(rng)``
yielding ``(Xb (B, I), Tb (B, O))`` on the engine's device. The rows come from
``bp_gpu.data.batches.BatchReader``: a background thread reads the chunks into reused shuffle
buffers, changes them in place (``transform``: the classifier's standardisation), turns each
chunk's labels into 0/1 targets (``encode``) and draws each buffer's permutation; this source cuts
the batches, one row gather per batch, as ``ResidentBatches`` does for arrays in memory. So memory
holds the batch and a few buffers of a few chunks, never the file, and the order is the one
``bp_gpu.data.batches`` documents, drawn from the loop's generator (the same ``seed`` gives the
same batches, run to run and on every backend).

Placement: on the CPU engine (and in the CUDA simulator, whose device arrays are NumPy arrays) the
rows are gathered straight into the engine's batch buffer; on a GPU into
``bp_gpu.train.DeviceStaging``'s pinned buffer, then copied to the device on a copy stream,
double-buffered with events, overlapping the previous batch's step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .cpu_steps import take_rows
from .data.batches import BatchReader
from .data.dataset import Dataset
from .train import DeviceStaging

SHUFFLE_BUFFER = 4  # chunks per shuffle buffer (bp_gpu.data.batches)
PREFETCH = 1  # shuffle buffers the reader may fill ahead of the one being cut into batches


class DatasetSource:
    """Minibatches of ``dataset`` for ``engine``: ``encode(y) -> T (rows, n_outputs)`` labels to
    targets, ``transform(X)`` in place on every chunk's features (or None). Batches of
    ``batch_size`` rows (capped at the data set's rows), the last one of an epoch ragged."""

    def __init__(
        self,
        engine: Any,
        dataset: Dataset,
        batch_size: int,
        *,
        n_outputs: int,
        encode: Callable[[np.ndarray], np.ndarray],
        transform: Callable[[np.ndarray], None] | None = None,
        shuffle_buffer: int = SHUFFLE_BUFFER,
        prefetch: int = PREFETCH,
    ) -> None:
        self.n_rows = int(dataset.n_rows)
        self.batch_size = max(1, min(batch_size, self.n_rows))
        self.steps_per_epoch = -(-self.n_rows // self.batch_size)
        self.reader = BatchReader(dataset, self.batch_size, shuffle_buffer=shuffle_buffer, dtype=engine.dtype,
                                  prefetch=prefetch, transform=transform, encode=encode)
        shapes = (dataset.n_features, n_outputs)
        if engine.xp is np:
            self.staging = None
            self.Xb, self.Tb = (np.empty((self.batch_size, w), engine.dtype) for w in shapes)
            self.views: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # B -> (Xb[:B], Tb[:B])
        else:
            self.staging = DeviceStaging(engine.xp, self.batch_size, shapes, (engine.dtype, engine.dtype))

    def epoch(self, rng: np.random.Generator) -> Iterator[tuple[Any, Any]]:
        """One epoch's batches on the engine's device; the chunk order and shuffle seed are drawn
        from ``rng`` when the epoch starts. Closing the iterator stops the reader's thread."""
        rows = self.reader.epoch(rng)
        try:
            for X, T, idx in rows:
                yield self._gather(X, T, idx) if self.staging is None else self._send(X, T, idx)
        finally:
            rows.close()

    def close(self) -> None:
        """Stops the reader's thread, which reads the next epoch ahead once an epoch has ended.
        A later ``epoch`` starts it again."""
        self.reader.close()

    def _gather(self, X: np.ndarray, T: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        B = len(idx)
        views = self.views.get(B)
        if views is None:
            views = self.views[B] = (self.Xb[:B], self.Tb[:B])
        take_rows(X, idx, views[0])
        take_rows(T, idx, views[1])
        return views

    def _send(self, X: np.ndarray, T: np.ndarray, idx: np.ndarray) -> tuple[Any, Any]:
        def gather(hx: Any, ht: Any) -> None:  # into the pinned staging buffer
            take_rows(X, idx, hx)
            take_rows(T, idx, ht)

        return self.staging.send(len(idx), gather)
