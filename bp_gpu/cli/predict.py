"""``bp-gpu predict MODEL DATA``: predictions of a saved model for a data file, written as it reads.

DATA is read chunk by chunk, as for ``train`` (Parquet, Arrow/Feather, .npy, .npz, CSV), and each
chunk's predictions are written before the next chunk is read. Output: a ``prediction`` column
(``label_k`` columns for a multi-label model) and, with --proba, one ``proba_<class>`` column per
class, holding the model's dtype (float32 digits for a float32 model). --out PATH.parquet (or .pq,
.parq) writes Parquet, any other --out writes CSV, and without --out CSV goes to stdout. --out is
written atomically: a temporary file beside it, renamed over it at the end, removed on any error.

With --target COL the label column is left out of the features, its labels are checked against
the model's classes before anything is predicted (numbers against numbers, text against text),
and the accuracy is printed to stderr. When the model knows its features' names and the file names
its columns (Parquet, Arrow, CSV with a header), the features are taken by name, in the model's
order, and the file's other columns (the label among them) are ignored; --target may then not
name one of the model's features.

--out may not be MODEL or DATA (nor a file inside a DATA directory): that is refused before
anything is read (exit status 2).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import IO, Any

import numpy as np

from ._dataset import add_data_options

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict with a saved model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a model file written by 'bp-gpu train' or MLPClassifier.save",
    )
    p.add_argument("data", metavar="DATA", help="features: Parquet, Arrow/Feather, .npy, .npz or CSV (as for train)")
    p.add_argument(
        "--target",
        metavar="COL",
        help="a label column/array in DATA: excluded from the "
        "features, and the accuracy is reported",
    )
    add_data_options(p)
    p.add_argument("--out", metavar="PATH", help="write here (.parquet: Parquet, else CSV) instead of CSV to stdout")
    p.add_argument("--proba", action="store_true", help="add the class probabilities")
    p.add_argument(
        "--backend",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where to run the model (default auto: cuda if usable)",
    )
    p.set_defaults(func=run)


class CsvRows:
    """Predictions as CSV rows (the csv module quotes labels that need it)."""

    def __init__(self, f: IO[str], head: list[str]) -> None:
        self.w = csv.writer(f, lineterminator="\n")
        self.w.writerow(head)

    def close(self) -> None:
        """Nothing to finish: the caller owns the file."""

    def write(self, columns: list[np.ndarray]) -> None:
        # astype(str) prints a float32 with the shortest digits that give it back (0.459117, not
        # 0.45911699533462524): what the model computed, no more.
        self.w.writerows(zip(*[c.astype(str) for c in columns]))


class ParquetRows:
    """Predictions as a Parquet file, one row group per chunk of DATA."""

    def __init__(self, f: IO[bytes], head: list[str], types: list[Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.head = pa, head
        self.schema = pa.schema(list(zip(head, types)))
        self.w = pq.ParquetWriter(f, self.schema)

    def write(self, columns: list[np.ndarray]) -> None:
        pa = self.pa
        arrays = [pa.array(c, type=t) for c, t in zip(columns, self.schema.types)]
        self.w.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.w.close()


def _check_targets(clf: Any, data: Any) -> None:
    """Before anything is predicted: the target's labels must be comparable with the classes."""
    from ..labels import MULTILABEL, check_labels_against
    from . import CLIError

    if clf._label_kind == MULTILABEL:
        if data.label_columns != len(clf.classes_):
            raise CLIError(f"{data.path}: the model is multi-label with {len(clf.classes_)} labels; --target must "
                           f"name a ({len(clf.classes_)}-column) 0/1 label array (.npz)")
        return
    if data.label_columns is not None:
        raise CLIError(f"{data.path}: --target names a 2-D label array, but the model is {clf._label_kind}")
    unknown = check_labels_against(data.labels(), clf.classes_, f"{data.path}: the labels of column "
                                   f"{data.target!r}")
    if len(unknown):
        print(f"bp-gpu predict: note: {data.path}: labels the model never saw count as errors: "
              f"{unknown[:10].tolist()!r}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from .._files import atomic_write
    from ..classifier import load
    from ..labels import MULTILABEL, predictions
    from . import CLIError
    from ._dataset import open_data
    from ._paths import check_input, check_outputs

    check_input(args.model)
    check_input(args.data)
    # A bad --out is found before anything is read, and so is one that would replace the model or the data.
    check_outputs([("--out", args.out)], [("MODEL", args.model, "the model"), ("DATA", args.data, "the data")])
    clf = load(args.model, backend=None if args.backend == "auto" else args.backend)
    try:
        data = open_data(args, args.target, clf)
    except ValueError as exc:
        if args.target is None and "feature columns must be numeric" in str(exc):
            raise CLIError(f"{exc}; if it is the label, name it with --target") from None
        raise
    if data.n_features != clf.n_features_in_:
        hint = "" if args.target else "; if one column is the label, name it with --target"
        raise CLIError(
            f"{args.data} has {data.n_features} feature columns but the model expects "
            f"{clf.n_features_in_}{hint}"
        )
    multilabel = clf._label_kind == MULTILABEL
    K = len(clf.classes_)
    head = [f"label_{k}" for k in range(K)] if multilabel else ["prediction"]
    if args.proba:
        head += [f"proba_{c}" for c in clf.classes_]
    parquet = args.out is not None and os.path.splitext(args.out)[1].lower() in PARQUET_SUFFIXES
    dtype = clf.net_.dtype
    hits = rows = 0

    def stream(make_writer: Any) -> None:
        nonlocal hits, rows
        if args.target is not None:
            _check_targets(clf, data)  # after --out is known to be writable, before any row is written
        writer = make_writer()
        try:
            for P, chunk in clf.iter_predict_proba(data):
                pred = predictions(clf._label_kind, clf.classes_, P)
                cols = [pred[:, k] for k in range(K)] if multilabel else [pred]
                if args.proba:
                    P = P.astype(dtype)  # float32 probabilities for a float32 model: what it computed
                    cols += [P[:, k] for k in range(P.shape[1])]
                writer.write(cols)
                if chunk.y is not None:
                    y = np.asarray(chunk.y)
                    hits += int(np.sum((pred == y.reshape(pred.shape)).all(axis=1) if multilabel else pred == y))
                rows += len(P)
        finally:
            writer.close()

    if parquet:
        try:
            import pyarrow as pa
        except ImportError:
            raise CLIError("writing Parquet needs pyarrow: pip install 'bp_gpu[data]'") from None
        label_type = {"U": pa.string(), "S": pa.string(), "O": pa.string(), "f": pa.float64(), "b": pa.bool_()}.get(
            clf.classes_.dtype.kind, pa.int64())
        types = [pa.int64()] * K if multilabel else [label_type]
        if args.proba:
            types += [pa.from_numpy_dtype(dtype)] * K
        with atomic_write(args.out, "wb") as f:
            stream(lambda: ParquetRows(f, head, types))
    elif args.out is not None:
        with atomic_write(args.out, "w", newline="") as f:
            stream(lambda: CsvRows(f, head))
    else:
        try:
            stream(lambda: CsvRows(sys.stdout, head))
            sys.stdout.flush()
        except BrokenPipeError:  # the reader stopped early (| head): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit
            return 0
    if args.target is not None and rows:
        print(f"accuracy {hits / rows:.4f} on {rows} rows", file=sys.stderr)
    return 0
