"""Arrow IPC files (Feather version 2 is the same format): memory-mapped, chunks are the record
batches, read in any order through the file's footer. Reading a column touches only that
column's pages, so the label pass reads the target column alone (for an uncompressed file; a
compressed batch is decompressed whole). The batch lengths are read when the file is opened.
The streaming IPC format and Feather version 1 have no footer to seek with and are refused.
As for Parquet, pandas' index columns are no features with ``features=None``, and a column null
throughout (the batches' null counts, read with their lengths) is refused when the file is opened.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _arrow
from .dataset import Chunk, DataError, release_pages


class _Source:
    """What every view of one Arrow file shares: the memory map, the reader, the batch table."""

    def __init__(self, path: str, target: str | int | None, features: Sequence[str | int] | None) -> None:
        pa = _arrow.pyarrow("Arrow IPC")
        self.path = path
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic[:4] == b"FEA1":
            raise DataError(f"{path}: a Feather version 1 file; re-save it as version 2 "
                            "(pyarrow.feather.write_feather) to read it in chunks")
        try:
            # Our own read-only mmap (not pa.memory_map) so that its pages can be released after
            # each batch (dataset.release_pages); pyarrow reads it zero-copy through the buffer.
            with open(path, "rb") as f:
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self.reader = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(self.mm)))
            names = list(self.reader.schema.names)
            rows, nulls = [], np.zeros(len(names), dtype=np.int64)
            for i in range(self.reader.num_record_batches):  # the lengths and null counts of the metadata
                b = self.reader.get_batch(i)
                rows.append(b.num_rows)
                nulls += [b.column(k).null_count for k in range(len(names))]
            release_pages(self.mm)
        except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: mmap of an empty file
            raise DataError(f"{path}: not a readable Arrow IPC file, truncated or corrupt; the streaming "
                            f"format is not supported, only the file format ({exc})") from None
        # One reader serves every view and thread (the batch iterator reads in the background).
        self.lock = threading.Lock()
        self.feature_names, self.target, self.ignored_columns = _arrow.select_columns(
            self.reader.schema, target, features, path)
        _arrow.check_not_all_missing(dict(zip(names, nulls.tolist())), sum(rows), self.feature_names, self.target,
                                     path)
        self.rows = np.array(rows, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.rows)[:-1]]).astype(np.int64)

    def batch(self, b: int) -> Any:
        try:
            with self.lock:
                return self.reader.get_batch(b)
        except Exception as exc:  # decompression or layout errors: the file is damaged
            raise DataError(f"{self.path}: record batch {b} cannot be read, the file is truncated or corrupt "
                            f"({exc})") from None

    def where(self, b: int, i: int, column: str) -> str:
        return f"{self.path}: row {int(self.starts[b]) + i} (record batch {b}), column {column!r}"

    def release(self) -> None:
        release_pages(self.mm)

    def close(self) -> None:
        self.reader = None
        try:
            self.mm.close()
        except BufferError:  # Arrow arrays of this file are still alive: the map goes with them
            pass


class ArrowDataset(_arrow.ChunkRange):
    """An Arrow IPC (Feather v2) file; see the module docstring."""

    format = "arrow"

    def chunk_rows(self) -> np.ndarray:
        return self._src.rows[self._lo:self._hi].copy()

    def _read_chunk(self, i: int, dtype: np.dtype) -> Chunk:
        return self._read_into(i, np.empty((int(self._src.rows[self._lo + i]), self.n_features), dtype))

    def _read_into(self, i: int, out: np.ndarray) -> Chunk:
        b = self._lo + i
        batch = self._src.batch(b)
        names = self.feature_names
        X = _arrow.features([batch.column(n) for n in names], batch.num_rows, out.dtype,
                            lambda r, k: self._src.where(b, r, names[k]), out)
        y = None if self.target is None else self._labels(b, batch.column(self.target))
        self._src.release()
        return Chunk(X, y, int(self._src.starts[b]))

    def _chunk_labels(self, i: int) -> np.ndarray:
        b = self._lo + i
        y = self._labels(b, self._src.batch(b).column(self.target))
        self._src.release()
        return y


    def close(self) -> None:
        self._src.close()


def column_names(path: str) -> list[str]:
    """The column names of an Arrow IPC file, from its schema."""
    pa = _arrow.pyarrow("Arrow IPC")
    try:
        with pa.memory_map(path) as source:
            return list(pa.ipc.open_file(source).schema.names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Arrow IPC file, truncated or corrupt ({exc})") from None


def open_arrow(
    path: str, target: str | int | None = None, features: Sequence[str | int] | None = None
) -> ArrowDataset:
    src = _Source(path, target, features)
    return ArrowDataset(src, 0, len(src.rows))
