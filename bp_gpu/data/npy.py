"""A ``.npy`` file: one 2-D numeric array, memory-mapped (``np.load(mmap_mode="r")``), so only the
rows being read are in memory. The target is a column of the array, given by 0-based index;
chunks are row ranges, and a shard is a row range. Labels keep the array's dtype (a float column
gives float labels)."""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import numpy as np

from .arrays import ArrayDataset, check_chunk_rows, check_features_array
from .dataset import DataError, resolve_columns


def open_npy(
    path: str, target: int | str | None = None, features: Sequence[int | str] | None = None, *,
    chunk_rows: int | None = None,
) -> ArrayDataset:
    with open(path, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY":
        # np.load would take anything else for a pickle and say so, which misleads.
        what = ("a zip archive (a .npz? name it .npz)" if head.startswith(b"PK")
                else "not in the .npy format (no \\x93NUMPY magic string)")
        raise DataError(f"{path}: not a .npy file: it is {what}")
    try:
        A = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(A, np.ndarray):
        raise DataError(f"{path}: not a .npy array (a .npz archive? name it .npz)")
    check_features_array(A, path)
    names = [str(k) for k in range(A.shape[1])]
    t, cols = resolve_columns(names, target, features, path)

    def where(row: int, k: int | None) -> str:
        return f"{path}: row {row}, column {t if k is None else cols[k]}"

    return ArrayDataset(
        A, None if t is None else A[:, t], path=path, format="npy", feature_names=[names[k] for k in cols],
        target=None if t is None else names[t], columns=cols, where=where,
        chunk_rows=check_chunk_rows(chunk_rows, A.shape[1], A.dtype.itemsize),
        # np.load(mmap_mode="r") keeps its read-only mmap.mmap in .base (numpy/_core/memmap.py)
        mapping=A.base if isinstance(A.base, mmap.mmap) else None,
    )
