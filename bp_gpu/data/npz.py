"""A ``.npz`` archive: features in the array named ``features`` (default ``"X"``), labels in the
array named ``target``. NumPy cannot memory-map the members of a zip archive, so both arrays are
read into memory when the file is opened; chunks are then row ranges, as for ``.npy`` (save a
``.npy`` to stream a large array from disk)."""

from __future__ import annotations

import numpy as np

from .arrays import ArrayDataset, check_chunk_rows, check_features_array, check_label_array
from .dataset import DataError


def open_npz(
    path: str, target: str | None = None, features: str | None = None, *, chunk_rows: int | None = None
) -> ArrayDataset:
    features = "X" if features is None else features
    if not isinstance(features, str) or (target is not None and not isinstance(target, str)):
        raise TypeError("for a .npz, features and target are array names (str)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first entry, or an empty zip
        what = "a single .npy array (name it .npy)" if head == b"\x93NUM" else "not a zip archive"
        raise DataError(f"{path}: not a .npz file: it is {what}")
    try:
        with np.load(path, allow_pickle=False) as f:
            names = sorted(f.files)
            for name, opt in ((features, "features"), (target, "target")):
                if name is not None and name not in names:
                    raise DataError(f"{path}: no array named {name!r} for the {opt} (arrays: {names})")
            X = f[features]
            y = None if target is None else f[target]
    except DataError:
        raise
    except Exception as exc:  # BadZipFile, pickled members, truncation, bad CRC: all mean "unreadable"
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None
    check_features_array(X, f"{path}: array {features!r}")
    if y is not None:
        check_label_array(y, X.shape[0], f"{path}: array {target!r}")
    d = X.shape[1]

    def where(row: int, k: int | None) -> str:
        return f"{path}: {target if k is None else features}[{row}" + ("]" if k is None else f", {k}]")

    return ArrayDataset(
        X, y, path=path, format="npz", feature_names=[str(k) for k in range(d)], target=target, columns=None,
        where=where, chunk_rows=check_chunk_rows(chunk_rows, d, X.dtype.itemsize),
    )
