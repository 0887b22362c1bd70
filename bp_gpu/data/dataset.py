"""The interface every reader implements (``Dataset``), its chunks, its errors, and what all
formats share: the label pass, the statistics pass, sharding, reading everything.

A data set is a sequence of *chunks*: the unit a format can read on its own (a Parquet row group,
an Arrow record batch, a row range of a ``.npy``, a line range of a CSV file). Every operation
streams over chunks, so memory holds a few chunks, never the file.
"""

from __future__ import annotations

import abc
import mmap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .moments import Moments


class DataError(ValueError):
    """Bad data in a file: one line naming the file, the row (CSV: the 1-based line, as editors
    count) and the column."""


@dataclass(frozen=True)
class Chunk:
    """One chunk of a data set: ``X`` (rows, d) C-contiguous in the requested dtype, ``y`` the raw
    labels (rows,) or ``None`` without a target, ``start`` the global 0-based index of its first row."""

    X: np.ndarray
    y: np.ndarray | None
    start: int


def split_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous part ``[lo, hi)`` of ``range(n)`` that ``rank`` of ``world`` gets: sizes differ
    by at most one, and a rank gets nothing only when ``n < world``."""
    for name, v in (("rank", rank), ("world", world)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int; got {type(v).__name__}")
    if world < 1:
        raise ValueError(f"world must be >= 1; got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world) = [0, {world}); got {rank}")
    return rank * n // world, (rank + 1) * n // world


def describe_bad_value(value: float, dtype: np.dtype) -> str:
    """The reason a feature value was refused, for the error message."""
    if np.isnan(value):
        return "NaN; features must be finite numbers"
    if np.isinf(value):
        return f"{value}; features must be finite numbers"
    return f"{value!r} does not fit in {np.dtype(dtype).name}; use dtype='float64' or scale your features"


def check_finite(X: np.ndarray, locate: Callable[[int, int], tuple[str, float]]) -> None:
    """Raise ``DataError`` at the first non-finite entry of ``X`` in row-major order.

    ``locate(i, k)`` returns the message prefix for row ``i``, feature ``k`` (``"file: row 7,
    column 'age'"``) and the value in the file (to tell a NaN from a value too large for float32)."""
    # One reduction decides the common case: any NaN or inf makes the sum non-finite. A finite sum
    # that overflowed only costs the exact check below.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(X.sum()):
            return
    bad = np.argwhere(~np.isfinite(X))
    if len(bad) == 0:
        return
    i, k = (int(v) for v in bad[0])
    where, value = locate(i, k)
    raise DataError(f"{where}: {describe_bad_value(value, X.dtype)}")


class Dataset(abc.ABC):
    """A data set read chunk by chunk; see ``bp_gpu.data.open``.

    Attributes: ``path``, ``format`` (``"parquet"``, ``"arrow"``, ``"npy"``, ``"npz"``, ``"csv"``,
    ``"arrays"``), ``feature_names`` (list of str), ``target`` (the label column's name, or ``None``),
    ``ignored_columns`` (the columns that ``features=None`` left out besides the target, each in
    words: pandas' index, ``"column 0 (unnamed: a pandas index)"``).
    """

    path: str
    format: str
    feature_names: list[str]
    target: str | None
    ignored_columns: Sequence[str] = ()

    def __init__(self) -> None:
        self._label_cache: np.ndarray | None = None

    # -- what each format provides ------------------------------------------------------------
    @property
    @abc.abstractmethod
    def n_chunks(self) -> int:
        """Chunks in this view (a shard's own chunks only)."""

    @abc.abstractmethod
    def chunk_rows(self) -> np.ndarray:
        """Rows of each chunk of this view, int64 (n_chunks,)."""

    @abc.abstractmethod
    def _read_chunk(self, i: int, dtype: np.dtype) -> Chunk:
        """Chunk ``i`` of this view, read and validated."""

    def _read_into(self, i: int, out: np.ndarray) -> Chunk:
        """Chunk ``i`` with its features written into ``out`` (its rows x ``n_features``, C-contiguous,
        float32 or float64: a slice of the batch reader's buffer), so the batch path copies a chunk
        once. The built-in formats convert straight into ``out``; this default reads, then copies."""
        c = self._read_chunk(i, out.dtype)
        out[...] = c.X
        return Chunk(out, c.y, c.start)

    @abc.abstractmethod
    def _chunk_labels(self, i: int) -> np.ndarray:
        """The labels of chunk ``i``, validated (no missing label), reading as little as the format
        allows (the target column alone where it can)."""

    @abc.abstractmethod
    def shard(self, rank: int, world: int) -> Dataset:
        """The part of this data set that process ``rank`` of ``world`` reads: a contiguous range of
        chunks (rows for ``.npy``, ``.npz`` and arrays), ragged where the counts do not divide. A
        rank gets 0 rows only when there are fewer chunks (rows) than ranks."""

    def close(self) -> None:  # noqa: B027 - a hook: only formats that hold a file open override it
        """Release open files or memory maps (also done when the object is collected)."""

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared -------------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def named_columns(self) -> bool:
        """Whether ``feature_names`` are names the file gives (Parquet, Arrow, CSV with a header),
        rather than positions (``"0"``, ``"1"``, ...)."""
        return False

    @property
    def label_columns(self) -> int | None:
        """``None`` when each row has one label; ``K`` when the labels are rows of a (n, K) 0/1
        indicator matrix (multi-label: arrays and ``.npz`` only)."""
        return None

    def select_chunks(self, chunks: Sequence[int] | np.ndarray) -> Dataset:
        """A view of the chunks ``chunks`` of this view (indices in ``range(n_chunks)``, in that order):
        what the classifier holds out for early stopping. Rows keep their global numbers in errors."""
        return ChunkSubset(self, self._check_order(chunks))

    @property
    def n_rows(self) -> int:
        """Rows in this view (for CSV this runs the first pass, once)."""
        return int(self.chunk_rows().sum())

    def __repr__(self) -> str:
        return (f"<bp_gpu.data {self.format} {self.path!r}: {self.n_features} features, "
                f"target {self.target!r}, {self.n_chunks} chunks>")

    def _check_order(self, order: Sequence[int] | np.ndarray | None) -> np.ndarray:
        n = self.n_chunks
        if order is None:
            return np.arange(n)
        order = np.asarray(order)
        if order.ndim != 1 or (order.size and order.dtype.kind not in "iu"):
            raise ValueError("order must be a 1-D sequence of chunk indices")
        if order.size and (order.min() < 0 or order.max() >= n):
            raise ValueError(f"order holds a chunk index outside [0, {n}) (this view has {n} chunks)")
        return order

    def iter_chunks(
        self, order: Sequence[int] | np.ndarray | None = None, *, dtype: np.dtype | type = np.float64
    ) -> Iterator[Chunk]:
        """Yield ``Chunk(X, y, start)`` for the chunks of this view in ``order`` (chunk indices in
        ``range(n_chunks)``; ``None`` = file order). Each chunk is validated as it is read; bad data
        raises ``DataError`` naming the file, the row (CSV: line) and the column."""
        dtype = _float_dtype(dtype)
        for i in self._check_order(order):
            yield self._read_chunk(int(i), dtype)

    def labels(self) -> np.ndarray:
        """The sorted unique labels of the target column in this view.

        Computed once by a pass over the labels alone (the target column alone for Parquet and
        Arrow, whose columns are stored apart; the target column of every row range for
        ``.npy``; for CSV the first pass, which also counts the rows) and cached. File statistics
        are not used: Parquet's min/max do not give the set, and a dictionary may hold values no
        row uses. A missing label (null, blank, NA, NaN) raises ``DataError`` naming the file, the
        row (CSV: line) and the column; it never becomes a class of its own."""
        if self.target is None:
            raise ValueError(f"{self.path}: no target column was given, so there are no labels")
        if self._label_cache is None:
            parts = [np.unique(self._chunk_labels(i)) for i in range(self.n_chunks)]
            self._label_cache = np.unique(np.concatenate(parts)) if parts else np.empty(0)
        return self._label_cache.copy()

    def moments(self, dtype: np.dtype | type = np.float64) -> Moments:
        """Count, mean and M2 per feature of this view, from one streaming pass (Chan et al.'s
        merge of per-chunk moments; ranks can merge theirs the same way), computed in float64 from
        the features read as ``dtype`` (a model's dtype: the values it will see; a value too large
        for float32 is then reported here, with its row and column)."""
        m = Moments.empty(self.n_features)
        for c in self.iter_chunks(dtype=dtype):
            m = m.merge(Moments.of(c.X))
        return m

    def stats(self, dtype: np.dtype | type = np.float64) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` float64 (d,) per feature from one streaming pass (see ``moments``); the
        population standard deviation, with ``std = 1.0`` for a constant feature (standardising
        maps it to 0)."""
        return self.moments(dtype).mean_std()

    def read_all(self, dtype: np.dtype | type = np.float64) -> tuple[np.ndarray, np.ndarray | None]:
        """``(X, y)`` of this whole view in memory, chunks in file order: for small data. ``X`` is
        allocated once and filled chunk by chunk, so the peak is ``X`` plus one chunk."""
        dtype = _float_dtype(dtype)
        X = np.empty((self.n_rows, self.n_features), dtype)
        ys, row = [], 0
        for c in self.iter_chunks(dtype=dtype):
            X[row:row + len(c.X)] = c.X
            row += len(c.X)
            ys.append(c.y)
        if self.target is None:
            return X, None
        return X, np.concatenate(ys) if ys else np.empty(0)

    def batches(
        self,
        batch_size: int,
        *,
        rng: np.random.Generator,
        shuffle_buffer: int = 4,
        dtype: np.dtype | type = np.float32,
        prefetch: int = 1,
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """One epoch of ``(X (B, d) dtype C-contiguous, y (B,))`` batches, read by a background
        thread; see ``bp_gpu.data.batches.epoch_batches`` for the exact order and memory bound."""
        from .batches import epoch_batches

        return epoch_batches(self, batch_size, rng=rng, shuffle_buffer=shuffle_buffer, dtype=dtype,
                             prefetch=prefetch)


class ChunkSubset(Dataset):
    """Some chunks of a data set, in a given order (``Dataset.select_chunks``)."""

    def __init__(self, parent: Dataset, chunks: np.ndarray) -> None:
        super().__init__()
        self._parent, self._chunks = parent, np.asarray(chunks, dtype=np.int64)
        self.path, self.format = parent.path, parent.format
        self.feature_names, self.target = parent.feature_names, parent.target

    @property
    def n_chunks(self) -> int:
        return len(self._chunks)

    @property
    def label_columns(self) -> int | None:
        return self._parent.label_columns

    @property
    def named_columns(self) -> bool:
        return self._parent.named_columns

    def chunk_rows(self) -> np.ndarray:
        return self._parent.chunk_rows()[self._chunks]

    def _read_chunk(self, i: int, dtype: np.dtype) -> Chunk:
        return self._parent._read_chunk(int(self._chunks[i]), dtype)

    def _read_into(self, i: int, out: np.ndarray) -> Chunk:
        return self._parent._read_into(int(self._chunks[i]), out)

    def _chunk_labels(self, i: int) -> np.ndarray:
        return self._parent._chunk_labels(int(self._chunks[i]))

    def shard(self, rank: int, world: int) -> Dataset:
        lo, hi = split_range(len(self._chunks), rank, world)
        return ChunkSubset(self._parent, self._chunks[lo:hi])


def _float_dtype(dtype: np.dtype | type) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dt}")
    return dt


def resolve_columns(
    names: list[str], target: str | int | None, features: Sequence[str | int] | None, path: str
) -> tuple[int | None, list[int]]:
    """``(target index or None, feature indices)`` among the columns ``names``.

    A column is given by name, or by 0-based index (an int, or a string of one that is not a
    column's name; negative counts from the end). ``features=None`` means every column but the
    target."""
    def index(spec: str | int, what: str) -> int:
        if isinstance(spec, str) and spec in names:
            if names.count(spec) > 1:
                raise DataError(f"{path}: {names.count(spec)} columns are named {spec!r}; give the {what} "
                                "by 0-based index")
            return names.index(spec)
        k = None
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            k = int(spec)
        elif isinstance(spec, str) and spec.strip().lstrip("+-").isdigit():
            k = int(spec)
        if k is None:
            shown = names if len(names) <= 20 else names[:20] + ["..."]
            raise DataError(f"{path}: no column named {spec!r} for the {what} (columns: {shown})")
        if not -len(names) <= k < len(names):
            raise DataError(f"{path}: column index {k} for the {what} is out of range for {len(names)} columns")
        return k % len(names)

    t = None if target is None else index(target, "target")
    if features is None:
        cols = [k for k in range(len(names)) if k != t]
    else:
        if isinstance(features, (str, int)):
            raise TypeError("features must be a list of column names or indices (or None for all but the "
                            "target)")
        cols = [index(f, "features") for f in features]
        dup = {names[k] for k in cols if cols.count(k) > 1}
        if dup:
            raise DataError(f"{path}: features names the column {sorted(dup)[0]!r} twice")
        if t is not None and t in cols:
            raise DataError(f"{path}: the target column {names[t]!r} is also listed in features")
    if not cols:
        raise DataError(f"{path}: no feature columns besides the target")
    return t, cols


def release_pages(mapping: mmap.mmap | None) -> None:
    """Drop the pages of a read-only file mapping from this process's resident set.

    Reading a chunk through a memory map leaves its pages mapped (and counted in the resident
    memory) until the map is closed, so one pass over a file would grow the resident set to the
    file's size. After each chunk is copied out, ``madvise(MADV_DONTNEED)`` unmaps them again; they
    stay in the page cache, and a later read faults them back in (man 2 madvise). A no-op where the
    platform lacks it."""
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
