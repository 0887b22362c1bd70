"""Opening the CLI's data files with ``bp_gpu.data``: the options ``train`` and ``predict`` share.

DATA is anything ``bp_gpu.data.open`` reads: a Parquet file or directory, an Arrow IPC/Feather
file, a ``.npy``, a ``.npz`` or a CSV file. CSV options: ``--header``/``--no-header`` (default:
the first line is the header, refused when one of its fields is a number), ``--delimiter``,
``--encoding``. ``--features`` lists the feature columns (comma-separated names or 0-based
indices; for ``.npz`` the name of the features array); without it every column but the target
and pandas' index (``bp_gpu.data``: an unnamed first CSV column, the index columns of a Parquet or
Arrow file written by pandas) is a feature, or, for a fitted model that knows its features' names,
those columns by name.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from . import CLIError, UsageError

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
        "the target and a pandas index; for predict, the model's features by name when it knows them); for "
        ".npz the name of the features array (default X)",
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


def column_names(path: str, fmt: str, csv_options: dict[str, Any]) -> list[str] | None:
    """The names a file gives its columns (read from its schema or header alone), or None when it
    names none (``.npy``, ``.npz``, a CSV file read with ``--no-header``)."""
    if fmt == "csv" and csv_options.get("header") is not False:
        from ..data import csv

        return csv.column_names(path, **csv_options)
    if fmt == "parquet":
        from ..data import parquet

        return parquet.column_names(path)
    if fmt == "arrow":
        from ..data import arrow

        return arrow.column_names(path)
    return None


def _column(spec: str, columns: list[str]) -> str | None:
    """The name of the column ``spec`` gives (a name, or a 0-based index that is not a name)."""
    if spec in columns:
        return spec
    text = spec.strip()
    if text.lstrip("+-").isdigit() and -len(columns) <= int(text) < len(columns):
        return columns[int(text)]
    return None


def open_data(args: argparse.Namespace, target: str | None, model: Any = None, **reader: Any) -> Any:
    """The data set of ``args.data``. With a fitted ``model`` that knows its features' names
    (``feature_names_in_``) and a file that names its columns, those columns are the features, in
    the model's order, whatever else the file holds (the label column among them), unless
    ``--features`` is given; ``--target`` may not name one of them. ``reader``: further
    ``bp_gpu.data.open`` options (e.g. ``chunk_bytes``)."""
    import bp_gpu.data as bd

    path = args.data
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file or directory")
    fmt = bd.detect_format(path)
    given = [f"--{k}" if k != "header" else ("--header" if args.header else "--no-header")
             for k in CSV_OPTIONS if getattr(args, k) is not None]
    if fmt != "csv" and given:
        raise CLIError(f"{given[0]} applies to CSV files only; {path} is read as {fmt}")
    csv_options: dict[str, Any] = {k: getattr(args, k) for k in CSV_OPTIONS if getattr(args, k) is not None}
    kw = {**csv_options, **reader}
    features: Any = args.features
    if features is not None and fmt != "npz":
        features = [f.strip() for f in features.split(",")]
    names = getattr(model, "feature_names_in_", None)
    columns = None if names is None or features is not None else column_names(path, fmt, csv_options)
    if columns is None:
        return bd.open(path, target=target, features=features, **kw)
    names = [str(n) for n in names]
    shown = names if len(names) <= 10 else names[:10] + ["..."]
    label = None if target is None else _column(target, columns)
    if label in names:
        raise UsageError(f"--target {target} is {'' if label == target else f'column {label!r}, '}one of the "
                         f"model's features {shown}: it cannot be the label column; name the file's label column, "
                         "or leave --target out")
    missing = [n for n in names if n not in columns]
    if missing:
        from ..data.csv import delimiter_hint

        raise CLIError(f"{path} has no column {missing[0]!r}, which the model was trained on"
                       + (f" ({len(missing)} such columns: {missing[:5]})" if len(missing) > 1 else "")
                       + f"; the model's features are {shown}"
                       + (delimiter_hint(columns, args.delimiter or ",") if fmt == "csv" else ""))
    return bd.open(path, target=target, features=names, **kw)  # the model's columns, in its order
