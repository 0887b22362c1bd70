"""Parquet: one file, or a directory of files read as one data set (pyarrow.parquet).

Chunks are row groups, in file order (files sorted by path; names starting with ``.`` or ``_``,
such as ``_SUCCESS``, are skipped, and subdirectories are read too; no partition columns are derived
from directory names). Only the needed columns are read (features and target), and the label pass
reads the target column alone. Every file's footer is read when the data set is opened: a
truncated or foreign file, or a file whose schema (column names and types) differs from the first
file's, is refused then; a row group that cannot be decoded is reported when it is read.
Rows are numbered 0-based across the whole data set, in this order. With ``features=None`` the
columns that pandas' metadata marks as the index (``df.to_parquet`` of a non-range index) are no
features (``_arrow.select_columns``); a column that the footers' statistics show to be null
throughout is refused when the data set is opened.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _arrow
from .dataset import Chunk, DataError


def list_files(path: str) -> list[str]:
    """The data files of a Parquet directory, sorted; hidden (``.``) and marker (``_``) files skipped."""
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        out += [os.path.join(root, f) for f in files if not f.startswith((".", "_"))]
    return sorted(out)


def schema_difference(a: Any, b: Any) -> str | None:
    """How schema ``b`` differs from ``a`` (names and types; metadata and nullability ignored)."""
    for f in a:
        if f.name not in b.names:
            return f"it has no column {f.name!r}"
        if b.field(f.name).type != f.type:
            return f"column {f.name!r} is {b.field(f.name).type} here but {f.type} in the first file"
    for f in b:
        if f.name not in a.names:
            return f"it has a column {f.name!r} that the first file has not"
    if a.names != b.names:
        return "its columns are in another order"
    return None


def null_counts(metas: list[Any], columns: list[str]) -> dict[str, int]:
    """Nulls per top-level column over every row group of the files' footers (``metas``); a column
    some row group has no null count for (statistics are optional) is left out."""
    leaf = {}
    for j in range(metas[0].num_columns):
        c = metas[0].schema.column(j)
        if c.path == c.name:  # a top-level column, not a field of a nested one
            leaf[c.name] = j
    out = {}
    for name in columns:
        if name in leaf:
            stats = [md.row_group(rg).column(leaf[name]).statistics for md in metas for rg in range(md.num_row_groups)]
            if all(st is not None and st.has_null_count for st in stats):
                out[name] = sum(st.null_count for st in stats)
    return out


def column_names(path: str) -> list[str]:
    """The column names of a Parquet file (of a directory's first file), from its footer."""
    pa = _arrow.pyarrow("Parquet")
    import pyarrow.parquet as pq

    files = list_files(path) if os.path.isdir(path) else [path]
    if not files:
        raise DataError(f"{path}: a directory is read as a Parquet data set, but it holds no data files")
    try:
        return list(pq.read_schema(files[0]).names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{files[0]}: not a readable Parquet file, truncated or corrupt ({exc})") from None


class _Source:
    """What every view of one Parquet data set shares: files, footers, chunk table, columns."""

    def __init__(self, path: str, target: str | int | None, features: Sequence[str | int] | None) -> None:
        pa = _arrow.pyarrow("Parquet")
        import pyarrow.parquet as pq

        self.pq = pq
        self.path = path
        directory = os.path.isdir(path)
        if directory:
            self.files = list_files(path)
            if not self.files:
                raise DataError(f"{path}: a directory is read as a Parquet data set, but it holds no data files")
        else:
            self.files = [path]
        self.metas, schema0 = [], None
        for f in self.files:
            try:
                pf = pq.ParquetFile(f)
                schema = pf.schema_arrow
            except (pa.ArrowException, OSError) as exc:
                if directory:
                    raise DataError(f"{path}: a directory is read as a Parquet data set, but {f} in it is not a "
                                    f"readable Parquet file, truncated or corrupt ({exc})") from None
                raise DataError(f"{f}: not a readable Parquet file, truncated or corrupt ({exc})") from None
            if schema0 is None:
                schema0 = schema
            else:
                diff = schema_difference(schema0, schema)
                if diff:
                    raise DataError(f"{f}: its schema differs from that of {self.files[0]}: {diff}; the files "
                                    "of one data set must have the same columns and types")
            self.metas.append(pf.metadata)
        self.feature_names, self.target, self.ignored_columns = _arrow.select_columns(schema0, target, features, path)
        nulls = null_counts(self.metas, self.feature_names + ([] if self.target is None else [self.target]))
        _arrow.check_not_all_missing(nulls, sum(md.num_rows for md in self.metas), self.feature_names, self.target,
                                     path)
        chunks, start = [], 0
        for fi, md in enumerate(self.metas):
            for rg in range(md.num_row_groups):
                rows = md.row_group(rg).num_rows
                chunks.append((fi, rg, start, rows))
                start += rows
        self.chunks = chunks

    def read(self, c: int, columns: list[str]) -> Any:
        fi, rg, start, rows = self.chunks[c]
        try:
            # The footer read at open is reused: no second metadata read per row group.
            pf = self.pq.ParquetFile(self.files[fi], metadata=self.metas[fi])
            return pf.read_row_group(rg, columns=columns, use_threads=True)
        except Exception as exc:  # ArrowInvalid, OSError, thrift and codec errors: all mean corrupt
            raise DataError(f"{self.files[fi]}: row group {rg} (rows {start}-{start + rows - 1}) cannot be read, "
                            f"the file is truncated or corrupt ({exc})") from None

    def where(self, c: int, i: int, column: str) -> str:
        fi, rg, start, _ = self.chunks[c]
        local = start + i - sum(self.metas[j].num_rows for j in range(fi))
        place = (f"row {start + i} (row group {rg})" if len(self.files) == 1 else
                 f"row {start + i} of the data set (row {local} of this file, row group {rg})")
        return f"{self.files[fi]}: {place}, column {column!r}"


class ParquetDataset(_arrow.ChunkRange):
    """A Parquet file or directory; see the module docstring."""

    format = "parquet"

    def chunk_rows(self) -> np.ndarray:
        return np.array([c[3] for c in self._src.chunks[self._lo:self._hi]], dtype=np.int64)

    def _read_chunk(self, i: int, dtype: np.dtype) -> Chunk:
        return self._read_into(i, np.empty((self._src.chunks[self._lo + i][3], self.n_features), dtype))

    def _read_into(self, i: int, out: np.ndarray) -> Chunk:
        c = self._lo + i
        cols = self.feature_names + ([] if self.target is None else [self.target])
        table = self._src.read(c, cols)
        names = self.feature_names
        X = _arrow.features([table.column(n) for n in names], table.num_rows, out.dtype,
                            lambda r, k: self._src.where(c, r, names[k]), out)
        y = None if self.target is None else self._labels(c, table.column(self.target))
        return Chunk(X, y, self._src.chunks[c][2])

    def _chunk_labels(self, i: int) -> np.ndarray:
        c = self._lo + i
        return self._labels(c, self._src.read(c, [self.target]).column(self.target))



def open_parquet(
    path: str, target: str | int | None = None, features: Sequence[str | int] | None = None
) -> ParquetDataset:
    src = _Source(path, target, features)
    return ParquetDataset(src, 0, len(src.chunks))
