"""``bp-gpu predict MODEL DATA``: predictions of a saved model for a CSV/.npy/.npz file.

Writes CSV (to --out, or stdout): a ``prediction`` column (``label_k`` columns for a multi-label
model) and, with --proba, one ``proba_<class>`` column per class. With --target the label column
is left out of the features and the accuracy is printed to stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys


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
    p.add_argument("data", metavar="DATA", help="features: .csv, .npy or .npz (as for train)")
    p.add_argument(
        "--target",
        metavar="COL",
        help="a label column/array in DATA: excluded from the "
        "features, and the accuracy is reported",
    )
    p.add_argument(
        "--features", default="X", metavar="KEY", help=".npz only: the feature array (default X)"
    )
    p.add_argument("--out", metavar="PATH", help="write the CSV here instead of stdout")
    p.add_argument("--proba", action="store_true", help="add the class probabilities")
    p.add_argument(
        "--backend",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where to run the model (default auto: cuda if usable)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..persistence import load
    from . import CLIError
    from ._data import read_table

    clf = load(args.model, backend=args.backend)
    X, y = read_table(args.data, args.target, args.features)
    if X.shape[1] != clf.n_features_in_:
        hint = "" if args.target else "; if one column is the label, name it with --target"
        raise CLIError(
            f"{args.data} has {X.shape[1]} feature columns but the model expects "
            f"{clf.n_features_in_}{hint}"
        )
    pred = clf.predict(X)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    multilabel = pred.ndim == 2
    head = [f"label_{k}" for k in range(pred.shape[1])] if multilabel else ["prediction"]
    P = clf.predict_proba(X) if args.proba else None
    if P is not None:
        head += [f"proba_{c}" for c in clf.classes_]
    w.writerow(head)
    for i in range(X.shape[0]):
        row = [str(v) for v in pred[i]] if multilabel else [str(pred[i])]
        if P is not None:
            row += [repr(float(p)) for p in P[i]]
        w.writerow(row)
    if args.out:
        tmp = f"{args.out}.tmp{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            f.write(buf.getvalue())
        os.replace(tmp, args.out)
    else:
        sys.stdout.write(buf.getvalue())
    if y is not None:
        print(f"accuracy {clf.score(X, y):.4f} on {X.shape[0]} rows", file=sys.stderr)
    return 0
