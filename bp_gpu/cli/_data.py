"""Reading the CLI's data files: CSV (with or without a header row), ``.npy`` and ``.npz``.

- CSV: numeric feature columns; the target column (``--target`` name, or 0-based index) may hold
  any labels (kept as text, or as integers/floats when every value parses as one).
- ``.npy``: one 2-D numeric array; ``--target`` is a column index.
- ``.npz``: features in the array named ``--features`` (default ``X``), labels in the array named
  ``--target``; loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from . import CLIError


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _labels(values: list[str]) -> np.ndarray:
    """Text labels as ints when they all are, else floats when they all are, else strings."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return np.array(values)


def _target_index(target: str, header: list[str] | None, n_cols: int, path: str) -> int:
    if header is not None and target in header:
        return header.index(target)
    try:
        k = int(target)
    except ValueError:
        where = f"columns {header}" if header is not None else "no header row (use a column index)"
        raise CLIError(f"{path}: no column named {target!r} ({where})") from None
    if not -n_cols <= k < n_cols:
        raise CLIError(f"{path}: column index {k} is out of range for {n_cols} columns")
    return k % n_cols


def _read_csv(path: str, target: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise CLIError(f"{path}: the file has no rows")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
        if not rows:
            raise CLIError(f"{path}: the file has a header row but no data")
    n_cols = len(header) if header is not None else len(rows[0])
    for r, row in enumerate(rows):
        if len(row) != n_cols:
            line = r + (2 if header is not None else 1)
            raise CLIError(f"{path}: line {line} has {len(row)} fields, expected {n_cols}")
    t = None if target is None else _target_index(target, header, n_cols, path)
    feat_cols = [c for c in range(n_cols) if c != t]
    if not feat_cols:
        raise CLIError(f"{path}: no feature columns besides the target")
    X = np.empty((len(rows), len(feat_cols)), dtype=np.float64)
    for r, row in enumerate(rows):
        for k, c in enumerate(feat_cols):
            try:
                X[r, k] = float(row[c])
            except ValueError:
                name = repr(header[c]) if header is not None else str(c)
                line = r + (2 if header is not None else 1)
                raise CLIError(
                    f"{path}: line {line}, column {name}: {row[c]!r} is not a number"
                ) from None
    y = None if t is None else _labels([row[t].strip() for row in rows])
    return X, y


def _int_like(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        return y.astype(np.int64)
    return y


def read_table(
    path: str, target: str | None, features: str = "X"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(X (n, d) float64, y (n,) or None) from a data file; errors name the file and the problem."""
    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CLIError(f"{path}: not a readable .npy array ({exc})") from None
        if a.ndim != 2 or a.dtype.kind not in "biuf":
            raise CLIError(
                f"{path}: expected a 2-D numeric array; got shape {a.shape}, dtype {a.dtype}"
            )
        if target is None:
            return a.astype(np.float64), None
        t = _target_index(target, None, a.shape[1], path)
        return np.delete(a, t, axis=1).astype(np.float64), _int_like(a[:, t])
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception as exc:  # BadZipFile, pickled members, truncation: all mean "unreadable"
            raise CLIError(f"{path}: not a readable .npz archive ({exc})") from None
        if features not in arrays:
            raise CLIError(
                f"{path}: no array named {features!r} (arrays: {sorted(arrays)}); use --features"
            )
        X = arrays[features]
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            raise CLIError(
                f"{path}: {features!r} must be a 2-D numeric array; got shape {X.shape}, dtype {X.dtype}"
            )
        if target is None:
            return X.astype(np.float64), None
        if target not in arrays:
            raise CLIError(
                f"{path}: no array named {target!r} for --target (arrays: {sorted(arrays)})"
            )
        return X.astype(np.float64), _int_like(arrays[target])
    return _read_csv(path, target)
