"""A ``bp_gpu.data`` data set as a batch source of the epoch loop (``bp_gpu.train.train``).

``DatasetSource`` has the interface of ``bp_gpu.train.ArraySource``: ``n_rows`` and ``epoch(rng)``
yielding ``(Xb (B, I), Tb (B, O))`` on the engine's device. The rows come from
``bp_gpu.data.batches.BatchReader``: a background thread reads the chunks into one reused buffer,
changes them in place (``transform``: the classifier's standardisation), turns each chunk's labels
into 0/1 targets (``encode``), and gathers the shuffled batches into a ring of reused slots. So
memory holds the batch, the buffer of a few chunks and the ring, never the file, and the order is
the one ``bp_gpu.data.batches`` documents, drawn from the loop's generator (the same ``seed`` gives
the same batches, run to run and on every backend).

Placement: on the CPU engine (and in the CUDA simulator, whose device arrays are NumPy arrays) the
reader's batches are used as they are, with no copy; on a GPU each batch goes through
``bp_gpu.train.DeviceStaging``: copied into pinned memory, then to the device on a copy stream,
double-buffered with events, overlapping the previous batch's step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .data.batches import BatchReader
from .data.dataset import Dataset
from .train import DeviceStaging

SHUFFLE_BUFFER = 4  # chunks per shuffle buffer (bp_gpu.data.batches)
PREFETCH = 2  # batches the reader may run ahead


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
        self.reader = BatchReader(dataset, self.batch_size, shuffle_buffer=shuffle_buffer, dtype=engine.dtype,
                                  prefetch=prefetch, transform=transform, encode=encode, reuse=True)
        host = engine.xp is np
        self.staging = None if host else DeviceStaging(
            engine.xp, self.batch_size, (dataset.n_features, n_outputs), (engine.dtype, engine.dtype))

    def epoch(self, rng: np.random.Generator) -> Iterator[tuple[Any, Any]]:
        """One epoch's batches on the engine's device; the chunk order and shuffle seed are drawn
        from ``rng`` when the epoch starts. Closing the iterator stops the reader's thread."""
        batches = self.reader.epoch(rng)
        try:
            for Xb, Tb in batches:
                yield (Xb, Tb) if self.staging is None else self._send(Xb, Tb)
        finally:
            batches.close()

    def _send(self, Xb: np.ndarray, Tb: np.ndarray) -> tuple[Any, Any]:
        def fill(hx: Any, ht: Any) -> None:
            np.copyto(hx, Xb)
            np.copyto(ht, Tb)

        return self.staging.send(len(Xb), fill)
