"""Arrow columns to NumPy chunks, with the checks every Arrow-backed reader (Parquet, Arrow IPC,
CSV) shares. pyarrow is imported here, on first use of one of those formats: ``.npy`` and ``.npz``
need only NumPy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .dataset import DataError, Dataset, check_finite, resolve_columns, split_range


def pyarrow(fmt: str) -> Any:
    """The pyarrow module, or an ImportError saying how to install it."""
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401 - loads pa.compute
    except ImportError:
        raise ImportError(f"reading {fmt} files needs pyarrow: pip install 'bp_gpu[data]'") from None
    return pa


def is_numeric(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def is_label_type(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return is_numeric(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def check_schema_types(schema: Any, feature_names: list[str], target: str | None, path: str) -> None:
    """Feature columns must be numeric and the target numbers or text: a typed file says so in its
    schema, so this is checked once, when the file is opened."""
    import pyarrow as pa

    for name in feature_names:
        t = schema.field(name).type
        if pa.types.is_null(t):  # what pandas writes for a column of None only
            raise DataError(f"{path}: column {name!r} is entirely missing (type null: it holds no value); features "
                            "must be numbers; leave it out with features= (--features)")
        if not is_numeric(t):
            raise DataError(f"{path}: column {name!r} has type {t}; feature columns must be numeric")
    if target is not None and not is_label_type(schema.field(target).type):
        raise DataError(f"{path}: the target column {target!r} has type {schema.field(target).type}; "
                        "labels must be numbers or text")


def pandas_index_columns(schema: Any) -> list[str]:
    """The columns that pandas' metadata in ``schema`` marks as the DataFrame's index: what
    ``df.to_parquet(path)`` / ``df.to_feather(path)`` store a non-range index as (named
    ``__index_level_0__`` when it has no name), and what ``pyarrow.Table.to_pandas`` turns back
    into the index. A range index is stored as metadata only, with no column."""
    try:
        meta = schema.pandas_metadata
    except ValueError:  # metadata that is not JSON: not pandas'
        return []
    if not isinstance(meta, dict):
        return []
    return [c for c in meta.get("index_columns", []) if isinstance(c, str) and c in schema.names]


def select_columns(
    schema: Any, target: str | int | None, features: Sequence[str | int] | None, path: str
) -> tuple[list[str], str | None, list[str]]:
    """``(feature names, target name or None, ignored columns)`` of a typed file, types checked.
    With ``features=None``, every column but the target and pandas' index columns
    (``pandas_index_columns``), which are listed, in words, as ignored."""
    names = list(schema.names)
    t, cols = resolve_columns(names, target, features, path)
    ignored = []
    if features is None:
        index = [k for k in cols if names[k] in pandas_index_columns(schema)]
        if index and len(index) == len(cols):
            raise DataError(f"{path}: the only columns besides the target are pandas index columns "
                            f"{[names[k] for k in index]}; pass features= (--features) to train on them anyway")
        cols = [k for k in cols if k not in index]
        ignored = [f"column {names[k]!r} (a pandas index)" for k in index]
    feature_names = [names[k] for k in cols]
    target_name = None if t is None else names[t]
    check_schema_types(schema, feature_names, target_name, path)
    return feature_names, target_name, ignored


def check_not_all_missing(nulls: dict[str, int], n_rows: int, feature_names: list[str], target: str | None,
                          path: str) -> None:
    """A column whose every value is null (``nulls[name] == n_rows``, from the file's metadata) is
    refused when the file is opened: otherwise the first chunk read, in shuffled order, would
    report one arbitrary row of it."""
    for name in feature_names + ([] if target is None else [target]):
        if n_rows and nulls.get(name) == n_rows:
            need = "every row needs a label" if name == target else \
                "features must be numbers; leave it out with features= (--features)"
            raise DataError(f"{path}: column {name!r} is entirely missing (all {n_rows} values are null); {need}")


def first_null(col: Any) -> int | None:
    """Index of the first null of an Array or ChunkedArray, or None."""
    if col.null_count == 0:
        return None
    import pyarrow.compute as pc

    return int(pc.index(pc.is_null(col), True).as_py())


def features(
    columns: list[Any], n: int, dtype: np.dtype, where: Callable[[int, int], str], out: np.ndarray | None = None
) -> np.ndarray:
    """The numeric Arrow columns as one (n, d) C-contiguous array of ``dtype`` (written into ``out``
    when given), validated: a null or non-finite value raises ``DataError`` at ``where(row in
    chunk, feature k)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    X = np.empty((n, len(columns)), dtype) if out is None else out
    if X.shape != (n, len(columns)):
        raise DataError(f"{where(0, 0)}: the chunk has {n} rows but the file's metadata gave {X.shape[0]}; did the "
                        "file change while it was read?")
    for k, col in enumerate(columns):
        i = first_null(col)
        if i is not None:
            raise DataError(f"{where(i, k)}: the value is missing (empty, NA or null); features must be numbers")
        if pa.types.is_decimal(col.type):
            col = pc.cast(col, pa.float64())
        with np.errstate(over="ignore"):  # a value too large for float32 is reported by check_finite
            X[:, k] = col.to_numpy(zero_copy_only=False)
    check_finite(X, lambda i, k: (where(i, k), float(columns[k][i].as_py())))
    return X


def labels(col: Any, where: Callable[[int], str]) -> np.ndarray:
    """The labels of an Arrow column as NumPy (numbers keep their type, text becomes ``str``),
    validated: a null or NaN label raises ``DataError`` at ``where(row in chunk)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    i = first_null(col)
    if i is None and pa.types.is_floating(col.type):
        nan = pc.is_nan(col)
        if pc.any(nan).as_py():
            i = int(pc.index(nan, True).as_py())
    if i is not None:
        raise DataError(f"{where(i)}: the label is missing (empty, NA, null or NaN); every row needs a label")
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.to_numpy(zero_copy_only=False).astype(str)
    if pa.types.is_decimal(col.type):
        col = pc.cast(col, pa.float64())
    return col.to_numpy(zero_copy_only=False)


class ChunkRange(Dataset):
    """Chunks ``[lo, hi)`` of a file opened once and shared by its shards: an Arrow-backed source
    (``path``, ``feature_names``, ``target``, ``where(chunk, row, column)``) read a chunk at a time.
    Subclasses read the chunks."""

    def __init__(self, source: Any, lo: int, hi: int) -> None:
        super().__init__()
        self._src, self._lo, self._hi = source, lo, hi
        self.path, self.feature_names, self.target = source.path, source.feature_names, source.target
        self.ignored_columns = source.ignored_columns

    @property
    def n_chunks(self) -> int:
        return self._hi - self._lo

    @property
    def named_columns(self) -> bool:
        return True

    def _labels(self, c: int, col: Any) -> np.ndarray:
        return labels(col, lambda r: self._src.where(c, r, self.target))

    def shard(self, rank: int, world: int) -> ChunkRange:
        lo, hi = split_range(self.n_chunks, rank, world)
        return type(self)(self._src, self._lo + lo, self._lo + hi)
