"""``bp-gpu train DATA --target COL``: train an MLPClassifier on a data file and save it.

DATA is read chunk by chunk (``bp_gpu.data``): a Parquet file or directory, an Arrow IPC/Feather
file, a ``.npy``, a ``.npz`` or a CSV file; memory holds a batch and a few chunks, not the file.
The labels come from a first pass over the target column. Features are used as they are unless
--standardize is given (sigmoid units train poorly on raw features of very different ranges).
Hyperparameters default to ``bp_gpu.MLPClassifier``'s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from . import CLIError
from ._dataset import add_data_options


class Given(argparse.Action):
    """Stores an option's value and records its dest in ``namespace.given``: ``--resume`` must tell an
    option given on the command line from its default."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.given = namespace.given | {self.dest}


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


def nonnegative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {n}")
    return n


def add_model_options(
    p: argparse.ArgumentParser, *, hidden: str, epochs: int, batch_size: int, learning_rate: float
) -> None:
    """The options train and demo share (the MLPClassifier hyperparameters)."""
    p.add_argument(
        "--hidden",
        type=hidden_sizes,
        action=Given,
        default=hidden_sizes(hidden),
        metavar="N,N,...",
        help=f"hidden layer widths, comma-separated; 'none' for no hidden layer (default {hidden})",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        action=Given,
        default=epochs,
        help=f"passes over the data (default {epochs})",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        action=Given,
        default=batch_size,
        help=f"rows per step (default {batch_size})",
    )
    p.add_argument(
        "--optimizer", action=Given, choices=["sgd", "momentum", "adam"], default="adam", help="(default adam)"
    )
    p.add_argument(
        "--learning-rate", action=Given, type=float, default=learning_rate, help=f"(default {learning_rate})"
    )
    p.add_argument(
        "--momentum", action=Given, type=float, default=0.9, help="for --optimizer momentum (default 0.9)"
    )
    p.add_argument("--weight-decay", action=Given, type=float, default=0.0, help="L2 on the weights (default 0)")
    p.add_argument(
        "--dtype", action=Given, choices=["float32", "float64"], default="float32", help="(default float32)"
    )
    p.add_argument(
        "--backend",
        action=Given,
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="(default auto: cuda if usable)",
    )
    p.add_argument(
        "--seed", action=Given, type=nonnegative_int, default=0,
        help="random_state: initial weights and shuffle order (default 0)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(given=frozenset())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier on a CSV/.npy/.npz file and save it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "data", metavar="DATA",
        help="training data: Parquet file or directory, Arrow/Feather, .npy, .npz or CSV",
    )
    p.add_argument(
        "--target",
        required=True,
        metavar="COL",
        help="the label column: a column name or a 0-based column index; for .npz the "
        "name of the label array",
    )
    add_data_options(p)
    add_model_options(p, hidden="100", epochs=200, batch_size=200, learning_rate=0.001)
    p.add_argument(
        "--standardize",
        action=Given,
        nargs=0,
        const=True,
        default=False,
        help="standardise each feature with the mean and std of the training rows (one pass over the "
        "data); stored in the model and applied by predict and the ONNX export",
    )
    p.add_argument(
        "--early-stopping",
        action=Given,
        nargs=0,
        const=True,
        default=False,
        help="hold out --validation-fraction, stop when its accuracy stops improving",
    )
    p.add_argument("--validation-fraction", action=Given, type=float, default=0.1, help="(default 0.1)")
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
        help="continue training the model in this file up to --epochs in total: its architecture, "
        "optimizer, dtype and seed are kept (contradicting options are refused); --learning-rate, "
        "--momentum, --batch-size, --weight-decay and --backend, when given, apply",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training under mpiexec: each process reads only its own rows and rank 0 "
        "writes the model (pip install 'bp_gpu[mpi]'; README 'Many GPUs and machines')",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._files import check_writable
    from ..classifier import MLPClassifier, load
    from ._dataset import open_data
    from ._progress import ProgressMonitor, save_curves
    from ._resume import resume_options

    for path in (args.out, args.plot):
        if path:
            check_writable(path)  # a bad --out is found now, not after the training
    if args.distributed:  # one process of a data-parallel job: bp_gpu/cli/_distributed.py
        from ._distributed import run_distributed

        return run_distributed(args)
    if args.resume:
        clf = load(args.resume, backend=args.backend if "backend" in args.given else None)
        applied = resume_options(args, clf)
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
            random_state=args.seed,
            early_stopping=args.early_stopping,
            validation_fraction=args.validation_fraction,
            standardize=args.standardize,
        )
        remaining = args.epochs
    data = open_data(args, args.target, clf if args.resume else None)
    monitor = ProgressMonitor(
        data.n_rows,  # the bar corrects itself to the training rows after an epoch (early stopping)
        remaining,
        quiet=args.quiet,
        checkpoint=(args.out, args.checkpoint_every) if args.checkpoint_every else None,
    )
    first = clf.n_iter_ + 1 if args.resume else 1
    what = f"epoch{f's {first}-' if first < args.epochs else ' '}{args.epochs}"
    if args.resume:
        what += f" of {args.resume}"
    print(f"training on {data.n_rows} rows, {data.n_features} features of {args.data}: {what}, saving to "
          f"{args.out}", flush=True)
    if args.resume and applied:
        print(f"resuming with {', '.join(applied)} (the rest as saved in {args.resume})", flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            if args.resume:
                clf.partial_fit(data, epochs=remaining, monitor=monitor)
            else:
                clf.fit(data, monitor=monitor)
        except KeyboardInterrupt:
            # fit/partial_fit committed nothing (no epoch completed): there is nothing to save.
            kept = "was left as it was" if os.path.exists(args.out) else "was not written"
            raise KeyboardInterrupt(f"before the first epoch completed; {args.out} {kept}") from None
        finally:
            monitor.close()
    seconds = time.perf_counter() - t0
    interrupted = any("interrupted" in str(w.message) for w in caught)
    for w in caught:
        print(f"bp-gpu train: {w.message}", file=sys.stderr)
    done = clf.n_iter_ - (args.epochs - remaining)
    clf.save(args.out)
    rate = monitor.rows_seen / seconds if seconds > 0 else float("nan")
    print(
        f"{'interrupted: ' if interrupted else ''}trained {done} epoch(s) ({clf.n_iter_} in total) on "
        f"backend {clf.net_.backend} in {seconds:.2f} s ({rate:,.0f} samples/s)"
    )
    print(
        f"network {list(clf.net_.layer_sizes)}, final training loss {clf.loss_curve_[-1]:.6f}, "
        f"training accuracy {clf.score(data):.4f}"
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
