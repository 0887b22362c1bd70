"""``bp-gpu train DATA --target COL``: train an MLPClassifier on a CSV/.npy/.npz file and save it.

Features are used as they are: scale them beforehand (sigmoid units train poorly on raw features
of very different ranges). Hyperparameters default to ``bp_gpu.MLPClassifier``'s.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from . import CLIError


def hidden_sizes(text: str) -> tuple[int, ...]:
    """'64,64' -> (64, 64); '' or 'none' -> () (no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 64,64; got {text!r}"
        ) from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1; got {text!r}")
    return sizes


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {n}")
    return n


def add_model_options(
    p: argparse.ArgumentParser, *, hidden: str, epochs: int, batch_size: int, learning_rate: float
) -> None:
    """The options train and demo share (the MLPClassifier hyperparameters)."""
    p.add_argument(
        "--hidden",
        type=hidden_sizes,
        default=hidden_sizes(hidden),
        metavar="N,N,...",
        help=f"hidden layer widths, comma-separated; 'none' for no hidden layer (default {hidden})",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=epochs,
        help=f"passes over the data (default {epochs})",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=batch_size,
        help=f"rows per step (default {batch_size})",
    )
    p.add_argument(
        "--optimizer", choices=["sgd", "momentum", "adam"], default="adam", help="(default adam)"
    )
    p.add_argument(
        "--learning-rate", type=float, default=learning_rate, help=f"(default {learning_rate})"
    )
    p.add_argument(
        "--momentum", type=float, default=0.9, help="for --optimizer momentum (default 0.9)"
    )
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 on the weights (default 0)")
    p.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="(default float32)"
    )
    p.add_argument(
        "--backend",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="(default auto: cuda if usable)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="initial weights and shuffle order (default 0)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier on a CSV/.npy/.npz file and save it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "data", metavar="DATA", help="training data: .csv (header optional), .npy or .npz"
    )
    p.add_argument(
        "--target",
        required=True,
        metavar="COL",
        help="the label column: a CSV header name or a 0-based column index; for .npz the "
        "name of the label array",
    )
    p.add_argument(
        "--features", default="X", metavar="KEY", help=".npz only: the feature array (default X)"
    )
    add_model_options(p, hidden="100", epochs=200, batch_size=200, learning_rate=0.001)
    p.add_argument(
        "--early-stopping",
        action="store_true",
        help="hold out --validation-fraction, stop when its accuracy stops improving",
    )
    p.add_argument("--validation-fraction", type=float, default=0.1, help="(default 0.1)")
    p.add_argument(
        "--out",
        default="model.npz",
        metavar="PATH",
        help="where to save the model (default model.npz)",
    )
    p.add_argument("--plot", metavar="PNG", help="also write the training curves to this PNG")
    p.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        help="save the model to --out every N epochs as training goes",
    )
    p.add_argument(
        "--resume",
        metavar="MODEL",
        help="continue training the model in this file up to --epochs in total (its "
        "hyperparameters are used; --backend may override where it runs)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training under mpiexec: each process reads only its own rows and rank 0 "
        "writes the model (pip install 'bp_gpu[mpi]'; README 'Many GPUs and machines')",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..classifier import MLPClassifier
    from ..persistence import load
    from ._data import read_table
    from ._progress import ProgressMonitor, save_curves

    if args.distributed:  # one process of a data-parallel job: bp_gpu/cli/_distributed.py
        from ._distributed import run_distributed

        return run_distributed(args)
    X, y = read_table(args.data, args.target, args.features)
    if args.resume:
        clf = load(args.resume, backend=None if args.backend == "auto" else args.backend)
        remaining = args.epochs - clf.n_iter_
        if remaining < 1:
            raise CLIError(
                f"{args.resume} has already trained {clf.n_iter_} epochs; ask for more with --epochs"
            )
    else:
        clf = MLPClassifier(
            hidden_layer_sizes=args.hidden,
            optimizer=args.optimizer,
            learning_rate=args.learning_rate,
            momentum=args.momentum,
            batch_size=args.batch_size,
            epochs=args.epochs,
            weight_decay=args.weight_decay,
            dtype=args.dtype,
            backend=args.backend,
            seed=args.seed,
            early_stopping=args.early_stopping,
            validation_fraction=args.validation_fraction,
        )
        remaining = args.epochs
    n_train = X.shape[0]
    if clf.early_stopping and not args.resume:
        n_train -= int(round(args.validation_fraction * n_train))
    monitor = ProgressMonitor(
        n_train,
        remaining,
        quiet=args.quiet,
        checkpoint=(args.out, args.checkpoint_every) if args.checkpoint_every else None,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            if args.resume:
                clf.partial_fit(X, y, epochs=remaining, monitor=monitor)
            else:
                clf.fit(X, y, monitor=monitor)
        finally:
            monitor.close()
    seconds = time.perf_counter() - t0
    interrupted = any("interrupted" in str(w.message) for w in caught)
    for w in caught:
        print(f"bp-gpu train: {w.message}", file=sys.stderr)
    done = clf.n_iter_ - (args.epochs - remaining)
    clf.save(args.out)
    rate = done * n_train / seconds if seconds > 0 else float("nan")
    print(
        f"{'interrupted: ' if interrupted else ''}trained {done} epoch(s) ({clf.n_iter_} in total) on "
        f"backend {clf.net_.backend} in {seconds:.2f} s ({rate:,.0f} samples/s)"
    )
    print(
        f"network {list(clf.net_.layer_sizes)}, final training loss {clf.loss_curve_[-1]:.6f}, "
        f"training accuracy {clf.score(X, y):.4f}"
    )
    if getattr(clf, "validation_scores_", None):
        print(f"best validation accuracy {clf.best_validation_score_:.4f}")
    print(f"saved {args.out}")
    if args.plot:
        save_curves(
            args.plot,
            clf.loss_curve_,
            getattr(clf, "validation_scores_", None),
            "validation accuracy",
            f"bp-gpu train {args.data}",
        )
        print(f"training curves: {args.plot}")
    return 130 if interrupted else 0
