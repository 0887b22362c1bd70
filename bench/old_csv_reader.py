"""The CSV reader bp_gpu's CLI used before ``bp_gpu.data`` (``bp_gpu/cli/_data.py`` until the CLI moved
to ``bp_gpu.data``), kept only as ``bench/csv_reader.py``'s baseline: the ``csv`` module, a
``float()`` per field, the whole file in memory. Not used by bp_gpu itself.
"""

from __future__ import annotations

import csv

import numpy as np


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
        raise ValueError(f"{path}: no column named {target!r} ({where})") from None
    if not -n_cols <= k < n_cols:
        raise ValueError(f"{path}: column index {k} is out of range for {n_cols} columns")
    return k % n_cols


def _read_csv(path: str, target: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: the file has no rows")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
        if not rows:
            raise ValueError(f"{path}: the file has a header row but no data")
    n_cols = len(header) if header is not None else len(rows[0])
    for r, row in enumerate(rows):
        if len(row) != n_cols:
            line = r + (2 if header is not None else 1)
            raise ValueError(f"{path}: line {line} has {len(row)} fields, expected {n_cols}")
    t = None if target is None else _target_index(target, header, n_cols, path)
    feat_cols = [c for c in range(n_cols) if c != t]
    if not feat_cols:
        raise ValueError(f"{path}: no feature columns besides the target")
    X = np.empty((len(rows), len(feat_cols)), dtype=np.float64)
    for r, row in enumerate(rows):
        for k, c in enumerate(feat_cols):
            try:
                X[r, k] = float(row[c])
            except ValueError:
                name = repr(header[c]) if header is not None else str(c)
                line = r + (2 if header is not None else 1)
                raise ValueError(
                    f"{path}: line {line}, column {name}: {row[c]!r} is not a number"
                ) from None
    y = None if t is None else _labels([row[t].strip() for row in rows])
    return X, y


def read_table(path: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, d) float64, y (n,)) of a CSV file, as the old CLI read it."""
    X, y = _read_csv(path, target)
    return X, y
