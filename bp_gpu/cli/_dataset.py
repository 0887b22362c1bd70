"""Opening the CLI's data files with ``bp_gpu.data``: the options ``train`` and ``predict`` share.

DATA is anything ``bp_gpu.data.open`` reads: a Parquet file or directory, an Arrow IPC/Feather
file, a ``.npy``, a ``.npz`` or a CSV file. CSV options: ``--header``/``--no-header`` (default:
the first line is the header, refused when one of its fields is a number), ``--delimiter``,
``--encoding``. ``--features`` lists the feature columns (comma-separated names or 0-based
indices; for ``.npz`` the name of the features array).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from . import CLIError

CSV_OPTIONS = ("header", "delimiter", "encoding")


def delimiter(text: str) -> str:
    """One character; ``\\t`` or ``tab`` for a tab (a shell passes those as two or three characters)."""
    if text in ("\\t", "tab"):
        return "\t"
    if len(text) != 1:
        raise argparse.ArgumentTypeError(f"expected one character (or \\t for a tab); got {text!r}")
    return text


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--features",
        metavar="COLS",
        help="the feature columns, comma-separated names or 0-based indices (default: every column but "
        "the target); for .npz the name of the features array (default X)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--header", dest="header", action="store_const", const=True, default=None,
                   help="CSV: the first line holds the column names (default: it does, and a first line with "
                   "a number in it is refused)")
    g.add_argument("--no-header", dest="header", action="store_const", const=False,
                   help="CSV: there is no header; columns are named by 0-based index")
    p.add_argument("--delimiter", type=delimiter, default=None, metavar="CHAR",
                   help="CSV: the field separator (default ','; \\t for a tab)")
    p.add_argument("--encoding", default=None, metavar="NAME",
                   help="CSV: the text encoding, e.g. latin-1 (default utf-8; a UTF-8 byte order mark is skipped)")


def open_data(args: argparse.Namespace, target: str | None, model: Any = None, **reader: Any) -> Any:
    """The data set of ``args.data``; with a fitted ``model`` whose ``feature_names_in_`` are known,
    its feature columns are picked (and ordered) by name when the file names its columns.
    ``reader``: further ``bp_gpu.data.open`` options (e.g. ``chunk_bytes``)."""
    import bp_gpu.data as bd

    path = args.data
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file or directory")
    fmt = bd.detect_format(path)
    given = [f"--{k}" if k != "header" else ("--header" if args.header else "--no-header")
             for k in CSV_OPTIONS if getattr(args, k) is not None]
    if fmt != "csv" and given:
        raise CLIError(f"{given[0]} applies to CSV files only; {path} is read as {fmt}")
    kw: dict[str, Any] = {k: getattr(args, k) for k in CSV_OPTIONS if getattr(args, k) is not None}
    kw.update(reader)
    features: Any = args.features
    if features is not None and fmt != "npz":
        features = [f.strip() for f in features.split(",")]
    ds = bd.open(path, target=target, features=features, **kw)
    names = getattr(model, "feature_names_in_", None)
    if names is None or args.features is not None or not ds.named_columns:
        return ds
    names = [str(n) for n in names]
    if list(ds.feature_names) == names:
        return ds
    missing = [n for n in names if n not in ds.feature_names]
    if missing:
        raise CLIError(f"{path} has no column {missing[0]!r}, which the model was trained on"
                       + (f" ({len(missing)} such columns: {missing[:5]})" if len(missing) > 1 else "")
                       + f"; the model's features are {names if len(names) <= 10 else names[:10] + ['...']}")
    ds.close()
    return bd.open(path, target=target, features=names, **kw)  # the model's columns, in its order
