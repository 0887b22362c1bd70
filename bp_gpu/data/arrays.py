"""Arrays as a data set: in memory (``from_arrays``), a memory-mapped ``.npy``, or a ``.npz``'s
arrays. Chunks are row ranges of ``chunk_rows`` rows; a shard is a row range."""

from __future__ import annotations

import mmap
from collections.abc import Callable, Sequence

import numpy as np

from .dataset import Chunk, DataError, Dataset, check_finite, release_pages, split_range

CHUNK_BYTES = 4 << 20  # default chunk: about this many bytes of features


def default_chunk_rows(n_features: int, itemsize: int) -> int:
    return max(1, CHUNK_BYTES // max(1, n_features * itemsize))


def check_chunk_rows(chunk_rows: int | None, n_features: int, itemsize: int) -> int:
    if chunk_rows is None:
        return default_chunk_rows(n_features, itemsize)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int >= 1; got {chunk_rows!r}")
    return int(chunk_rows)


def check_labels(y: np.ndarray, start: int, where: Callable[[int], str]) -> None:
    """A missing label (NaN in a float column, None in an object column) is an error, never a class."""
    rows = y.reshape(len(y), -1)
    if y.dtype.kind == "f":
        missing = np.isnan(rows)
    elif y.dtype.kind == "O":
        missing = np.frompyfunc(lambda v: v is None or (isinstance(v, float) and v != v), 1, 1)(rows)
    else:
        return
    bad = np.flatnonzero(missing.astype(bool).any(axis=1))
    if len(bad):
        row = start + int(bad[0])
        raise DataError(f"{where(row)}: the label is missing (NaN or None); every row needs a label")


class ArrayDataset(Dataset):
    """Rows ``[lo, hi)`` of ``source`` (n, m) as a data set.

    ``columns`` picks the feature columns of ``source`` (``None``: all); ``y`` is the label array
    (n,) or (n, K) (a view into ``source`` for a ``.npy`` target column) or ``None``.
    ``where(row, k)`` words the location of feature ``k`` of a global row for error messages.
    ``mapping``: the read-only memory map ``source`` lives in, when this package opened it; its
    pages are released after each chunk, so a pass over the file does not grow the resident set."""

    def __init__(
        self,
        source: np.ndarray,
        y: np.ndarray | None,
        *,
        path: str,
        format: str,
        feature_names: list[str],
        target: str | None,
        columns: Sequence[int] | None,
        where: Callable[[int, int | None], str],
        chunk_rows: int,
        mapping: mmap.mmap | None = None,
        lo: int = 0,
        hi: int | None = None,
    ) -> None:
        super().__init__()
        self._source, self._y, self._columns = source, y, None if columns is None else list(columns)
        self.path, self.format, self.feature_names, self.target = path, format, feature_names, target
        self._where, self._chunk_rows = where, chunk_rows
        self._lo, self._hi = lo, source.shape[0] if hi is None else hi
        self._mapping = mapping
        # Consecutive feature columns (all but a first or last target column, the usual layout)
        # are read as a slice of the rows, not gathered column by column.
        cols = self._columns
        self._span = (cols[0], cols[-1] + 1) if cols and cols == list(range(cols[0], cols[-1] + 1)) else None

    @property
    def n_chunks(self) -> int:
        return -(-(self._hi - self._lo) // self._chunk_rows)

    @property
    def label_columns(self) -> int | None:
        y = self._y
        return int(y.shape[1]) if y is not None and y.ndim == 2 and y.shape[1] > 1 else None

    def chunk_rows(self) -> np.ndarray:
        rows = np.full(self.n_chunks, self._chunk_rows, dtype=np.int64)
        if len(rows):
            rows[-1] = self._hi - self._lo - self._chunk_rows * (len(rows) - 1)
        return rows

    def _bounds(self, i: int) -> tuple[int, int]:
        a = self._lo + i * self._chunk_rows
        return a, min(a + self._chunk_rows, self._hi)

    def _read_chunk(self, i: int, dtype: np.dtype) -> Chunk:
        a, b = self._bounds(i)
        return self._read_into(i, np.empty((b - a, self.n_features), dtype))

    def _read_into(self, i: int, out: np.ndarray) -> Chunk:
        a, b = self._bounds(i)
        src, X = self._source[a:b], out
        if self._span is not None:
            src = src[:, self._span[0]:self._span[1]]  # a view: the conversion below is the only copy
        elif self._columns is not None:
            src = src[:, self._columns]
        with np.errstate(over="ignore"):  # a value too large for float32 is reported by check_finite
            X[...] = src
        check_finite(X, lambda r, k: (self._where(a + r, k), float(src[r, k])))
        y = None if self._y is None else self._labels_of(a, b)
        release_pages(self._mapping)
        return Chunk(X, y, a)

    def _labels_of(self, a: int, b: int) -> np.ndarray:
        y = np.array(self._y[a:b])
        check_labels(y, a, lambda r: self._where(r, None))
        return y

    def _chunk_labels(self, i: int) -> np.ndarray:
        y = self._labels_of(*self._bounds(i))
        release_pages(self._mapping)
        return y

    def shard(self, rank: int, world: int) -> ArrayDataset:
        lo, hi = split_range(self._hi - self._lo, rank, world)
        return ArrayDataset(
            self._source, self._y, path=self.path, format=self.format, feature_names=self.feature_names,
            target=self.target, columns=self._columns, where=self._where, chunk_rows=self._chunk_rows,
            mapping=self._mapping, lo=self._lo + lo, hi=self._lo + hi,
        )


def check_features_array(X: np.ndarray, what: str) -> None:
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise DataError(f"{what} must be a 2-D numeric array; got shape {X.shape}, dtype {X.dtype}")


def check_label_array(y: np.ndarray, n: int, what: str) -> None:
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise DataError(f"{what} must have shape (n,) or (n, K) with n = {n} rows (as the features); "
                        f"got shape {y.shape}")
    if y.dtype.kind not in "biufUSO":
        raise DataError(f"{what} has dtype {y.dtype}; labels must be numbers or strings")


def from_arrays(
    X: np.ndarray, y: np.ndarray | None = None, *, chunk_rows: int | None = None
) -> ArrayDataset:
    """In-memory arrays as a ``Dataset``, so a training loop treats arrays and files alike.

    ``X`` (n, d) numeric, ``y`` (n,) labels (or an (n, K) 0/1 indicator matrix) or ``None``.
    Chunks are row ranges of ``chunk_rows`` rows (default: about 4 MiB of features); the arrays are
    not copied until read."""
    X = np.asarray(X)
    check_features_array(X, "X")
    if y is not None:
        y = np.asarray(y)
        check_label_array(y, X.shape[0], "y")
    d = X.shape[1]

    def where(row: int, k: int | None) -> str:
        return f"y[{row}]" if k is None else f"X[{row}, {k}]"

    return ArrayDataset(
        X, y, path="<arrays>", format="arrays", feature_names=[str(k) for k in range(d)],
        target=None if y is None else "y", columns=None, where=where,
        chunk_rows=check_chunk_rows(chunk_rows, d, X.dtype.itemsize),
    )
