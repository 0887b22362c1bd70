"""Data sets read chunk by chunk from files: Parquet, Arrow IPC/Feather, ``.npy``, ``.npz`` and CSV.

``bp_gpu.data.open(path, target=..., features=None)`` returns a ``Dataset``: the same interface
for every format (and for in-memory arrays, ``from_arrays``), read one chunk at a time so memory
holds a few chunks, never the file. One module per format; ``dataset`` holds the interface and
what formats share, ``batches`` the shuffled background-thread batch iterator, ``moments`` the
streaming mean and standard deviation. pyarrow (``pip install 'bp_gpu[data]'``) is needed for
Parquet, Arrow and CSV, and imported only when one of them is opened.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence

from .arrays import from_arrays
from .dataset import Chunk, DataError, Dataset
from .moments import Moments

__all__ = ["open", "from_arrays", "Dataset", "Chunk", "DataError", "Moments", "FORMATS"]

FORMATS = ("parquet", "arrow", "npy", "npz", "csv")

_EXTENSIONS = {
    ".parquet": "parquet", ".parq": "parquet", ".pq": "parquet",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
    ".npy": "npy", ".npz": "npz",
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
}
_MAGIC = ((b"PAR1", "parquet"), (b"ARROW1", "arrow"), (b"FEA1", "arrow"), (b"\x93NUMPY", "npy"), (b"PK\x03\x04", "npz"))


def detect_format(path: str) -> str:
    """The format of ``path``: a directory is Parquet; otherwise the extension decides, then the
    first bytes (Parquet, Arrow, NumPy and zip magic numbers); anything else is read as CSV."""
    if os.path.isdir(path):
        return "parquet"
    ext = os.path.splitext(path)[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    with builtins.open(path, "rb") as f:  # this module's `open` is the data set opener
        head = f.read(8)
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return "csv"


def open(
    path: str | os.PathLike,
    target: str | int | None = None,
    features: Sequence[str | int] | str | None = None,
    *,
    header: bool | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    format: str | None = None,
    chunk_rows: int | None = None,
    chunk_bytes: int | None = None,
) -> Dataset:
    """Open a data set for streaming.

    ``path``: a Parquet file or a directory of Parquet files, an Arrow IPC/Feather (v2) file, a
    ``.npy`` (memory-mapped 2-D numeric array), a ``.npz``, or a CSV file. ``format`` overrides the
    detection (``detect_format``): one of ``FORMATS``.

    ``target``: the label column: a column name, or a 0-based index (an int, or a string of one
    that is not a column's name; the only way for ``.npy``); for ``.npz`` the name of the labels
    array. ``None``: no labels (data to predict on).

    ``features``: the feature columns (names or indices); ``None``: every column but the target and
    pandas' index, which numbers the rows and would leak the label of sorted data (CSV: a first
    column with an empty name, what ``df.to_csv(path)`` writes; Parquet, Arrow: the columns that
    pandas' schema metadata names as the index, what ``pyarrow.Table.to_pandas`` leaves out),
    listed in the data set's ``ignored_columns``. For ``.npz``, the name of the features array
    (default ``"X"``).

    CSV only: ``header`` (``None``: a header line is expected, and refused when any of its fields is
    a number; ``True``: the first line is the header; ``False``: no header, columns named
    ``"0"``, ``"1"``, ...), ``delimiter`` (one character), ``encoding`` (any ASCII-compatible
    encoding Python knows; a UTF-8 BOM is skipped) and ``chunk_bytes`` (about 4 MiB by default).
    ``.npy``, ``.npz``: ``chunk_rows`` (default: about 4 MiB of features per chunk).

    Opening reads only metadata (Parquet footers, Arrow batch lengths, a CSV header and its chunk
    boundaries, a ``.npy`` header; a ``.npz`` is read whole). A Parquet or Arrow column whose every
    value is null is refused then, from the metadata's null counts. Errors: ``DataError`` (a
    ``ValueError``) naming the file and the problem; ``FileNotFoundError`` for a missing path.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    fmt = detect_format(path) if format is None else format
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    csv_only = {"header": header is not None, "delimiter": delimiter != ",", "encoding": encoding != "utf-8",
                "chunk_bytes": chunk_bytes is not None}
    given = [k for k, v in csv_only.items() if v]
    if fmt != "csv" and given:
        raise ValueError(f"{given[0]}= applies to CSV files only; {path} is read as {fmt}")
    if fmt in ("parquet", "arrow", "csv") and chunk_rows is not None:
        raise ValueError(f"chunk_rows= applies to .npy and .npz only; {fmt} files have their own chunks")
    if fmt == "npz":
        from .npz import open_npz

        return open_npz(path, target, features, chunk_rows=chunk_rows)
    if isinstance(features, str):
        raise TypeError("features must be a list of column names or indices (a str names an array of a .npz)")
    if os.path.isdir(path) and fmt != "parquet":
        raise DataError(f"{path}: a directory; only Parquet data sets can be directories")
    if fmt == "npy":
        from .npy import open_npy

        return open_npy(path, target, features, chunk_rows=chunk_rows)
    if fmt == "parquet":
        from .parquet import open_parquet

        return open_parquet(path, target, features)
    if fmt == "arrow":
        from .arrow import open_arrow

        return open_arrow(path, target, features)
    from .csv import CHUNK_BYTES, open_csv

    return open_csv(path, target, features, header=header, delimiter=delimiter, encoding=encoding,
                    chunk_bytes=CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
