"""``bp-gpu demo``: the main job end to end on a dataset that ships with scikit-learn (no download).

Standardises the features (statistics of the training split), trains an MLPClassifier with a
progress bar, prints its test accuracy beside two baselines (majority class, logistic regression)
and the backend used, and writes a PNG of the training loss and test accuracy per epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from . import CLIError
from ._options import check_model_options, estimator_params
from .train import add_model_options, number

DATASETS = ("breast_cancer", "digits")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train on a bundled dataset, compare with baselines, plot curves",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default="breast_cancer",
        help="scikit-learn's bundled breast-cancer (binary) or digits (10 classes) data (default breast_cancer)",
    )
    add_model_options(p, hidden="32", epochs=60, batch_size=32, learning_rate=0.01)
    p.add_argument(
        "--test-fraction", type=number(0, 1, low_open=True, high_open=True), default=0.25, metavar="F",
        help="the held-out share, in (0, 1) (default 0.25)",
    )
    p.add_argument(
        "--plot",
        default="bp_gpu_demo.png",
        metavar="PNG",
        help="training curves image (default bp_gpu_demo.png)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write the image")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_model_options(args)
    try:
        from sklearn import datasets
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise CLIError(
            "the demo needs scikit-learn (its bundled datasets): pip install 'bp_gpu[train]'"
        ) from None
    from ..classifier import MLPClassifier
    from ._progress import ProgressMonitor, save_curves

    data = getattr(datasets, f"load_{args.dataset}")()
    X, y = data.data.astype(np.float64), data.target
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=args.test_fraction, random_state=args.seed, stratify=y
    )
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    std[std == 0] = 1.0  # constant pixels in digits: leave them at 0 rather than divide by 0
    Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std

    classes, counts = np.unique(ytr, return_counts=True)
    majority = float(np.mean(yte == classes[counts.argmax()]))
    logreg = float(LogisticRegression(max_iter=2000).fit(Xtr, ytr).score(Xte, yte))

    clf = MLPClassifier(**estimator_params(args))
    print(
        f"bp-gpu demo: {args.dataset} ({X.shape[0]} samples, {X.shape[1]} features, {len(classes)} classes), "
        f"{len(Xtr)} train / {len(Xte)} test, standardised",
        flush=True,
    )
    test_acc: list[float] = []
    monitor = ProgressMonitor(
        len(Xtr),
        args.epochs,
        quiet=args.quiet,
        desc=f"demo {args.dataset}",
        on_epoch_extra=lambda info: test_acc.append(info.model().score(Xte, yte)),
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            clf.fit(Xtr, ytr, monitor=monitor)
        finally:
            monitor.close()
    seconds = time.perf_counter() - t0
    for w in caught:
        print(f"bp-gpu demo: {w.message}", file=sys.stderr)
    from ..backends import cuda_status
    from .info import CPU_BACKEND

    where = CPU_BACKEND if clf.net_.backend == "cpu" else cuda_status()[1]
    # fit caps the batch at the training rows: say what was used, not what was asked for
    batch = f"{len(Xtr)} (all {len(Xtr)} training rows)" if args.batch_size >= len(Xtr) else args.batch_size
    print(
        f"network {list(clf.net_.layer_sizes)} (sigmoid units), {args.optimizer} lr={args.learning_rate:g}, "
        f"batch {batch}, {args.dtype}{'' if args.precision == 'highest' else f', {args.precision} GEMMs'}"
    )
    print(f"backend: {clf.net_.backend} ({where})")
    print(
        f"trained {clf.n_iter_} epochs in {seconds:.2f} s ({clf.n_iter_ * len(Xtr) / seconds:,.0f} samples/s, "
        "including a test-set evaluation per epoch)"
    )
    print(f"final training loss {clf.loss_curve_[-1]:.4f}")
    print("test accuracy:")
    print(f"  bp_gpu MLP            {clf.score(Xte, yte):.4f}")
    print(f"  logistic regression   {logreg:.4f}")
    print(f"  majority class        {majority:.4f}")
    if not args.no_plot:
        save_curves(
            args.plot,
            clf.loss_curve_,
            test_acc,
            "test accuracy",
            f"bp-gpu demo: {args.dataset}, backend {clf.net_.backend}",
        )
        print(f"training curves: {args.plot}")
    return 0
