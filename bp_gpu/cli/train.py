"""``bp-gpu train DATA --target COL``: train an MLPClassifier on a data file and save it.

DATA is read chunk by chunk (``bp_gpu.data``): a Parquet file or directory, an Arrow IPC/Feather
file, a ``.npy``, a ``.npz`` or a CSV file; memory holds a batch and a few chunks, not the file.
The labels come from a first pass over the target column. Features are used as they are unless
--standardize is given (sigmoid units train poorly on raw features of very different ranges).
Hyperparameters default to ``bp_gpu.MLPClassifier``'s and are checked with the options (a bad
value is a usage error, exit status 2, before any data is read). --out and --plot may not be DATA
(nor a file inside a DATA directory), nor each other; --out may be the --resume model (continuing it
in place), --plot may not.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..hyperparams import LR_SCHEDULES, OPTIMIZERS
from ..precision import PRECISIONS
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


def number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> Any:
    """An argparse type: a finite float in the range from ``low`` to ``high`` (open or closed ends),
    so that a bad hyperparameter is a usage error naming its option (``argument --momentum:
    expected a number in [0, 1); got '-1'``), found before any data is read."""
    if high == math.inf:
        words = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        words = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}; got {text!r}") from None
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"expected {words}; got {text!r}")
        return value

    return parse




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
        "--optimizer", action=Given, choices=OPTIMIZERS, default="adam",
        help="sgd; momentum (SGD with --momentum); adam; adamw (decoupled weight decay); lamb (per-layer trust "
        "ratios) (default adam)",
    )
    p.add_argument(
        "--learning-rate", action=Given, type=number(0, low_open=True), default=learning_rate, metavar="RATE",
        help=f"the step size, or the peak of --lr-schedule (default {learning_rate})",
    )
    p.add_argument(
        "--lr-schedule", action=Given, choices=LR_SCHEDULES, default="constant",
        help="constant, or a linear warm-up over --warmup-epochs to --learning-rate, then a cosine or linear "
        "decay to --final-learning-rate at the last step (default constant)",
    )
    p.add_argument(
        "--warmup-epochs", action=Given, type=number(0), default=0.0, metavar="E",
        help="epochs of linear warm-up of --lr-schedule; a fraction is rounded to whole steps (default 0)",
    )
    p.add_argument(
        "--final-learning-rate", action=Given, type=number(0), default=0.0, metavar="RATE",
        help="the rate --lr-schedule decays to (default 0)",
    )
    p.add_argument(
        "--momentum", action=Given, type=number(0, 1, high_open=True), default=0.9,
        help="for --optimizer momentum, in [0, 1) (default 0.9)",
    )
    p.add_argument("--weight-decay", action=Given, type=number(0), default=0.0,
                   help="weight decay on the weights, not the biases: an L2 penalty for sgd, momentum and adam, "
                   "decoupled for adamw and lamb (default 0)")
    p.add_argument(
        "--dtype", action=Given, choices=["float32", "float64"], default="float32", help="(default float32)"
    )
    p.add_argument(
        "--precision", action=Given, choices=PRECISIONS, default="highest",
        help="the GEMMs' operands: highest (in --dtype), tf32 or bf16 (tensor cores, float32 accumulation; "
             "needs --dtype float32); on the CPU an exact reference, not a speed mode (default highest)",
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
        help="train a classifier on a Parquet, Arrow, CSV, .npy or .npz file and save it",
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
    p.add_argument("--validation-fraction", action=Given, type=number(0, 1, low_open=True, high_open=True),
                   default=0.1, metavar="F", help="the share held out by --early-stopping, in (0, 1) (default 0.1)")
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
        help="also save the model to --out every N epochs as training goes (default: only at the end)",
    )
    p.add_argument(
        "--resume",
        metavar="MODEL",
        help="continue training the model in this file up to --epochs in total: its architecture, "
        "optimizer, dtype and seed are kept (contradicting options are refused); --learning-rate, "
        "--lr-schedule, --warmup-epochs, --final-learning-rate, --momentum, --batch-size, --weight-decay "
        "and --backend, when given, apply; --out may be MODEL itself",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training under mpiexec: each process reads only its own rows and rank 0 "
        "writes the model (pip install 'bp_gpu[mpi]'; README 'Many GPUs and machines')",
    )
    p.set_defaults(func=run)


def check_paths(args: argparse.Namespace) -> None:
    """Before anything is read: the inputs exist, and --out and --plot can be written and are
    neither the data (nor a file of a data directory), nor --resume's model (except --out, which
    continues a model in place), nor each other."""
    from ._paths import check_input, check_outputs

    check_input(args.data)
    if args.resume:
        check_input(args.resume)
    check_outputs([("--out", args.out), ("--plot", args.plot)],
                  [("DATA", args.data, "the training data"), ("--resume", args.resume, "the model to resume")],
                  allowed=[("--out", "--resume")])


@contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Ctrl-C waits for the end of the block (a model being saved is written whole), then raises
    KeyboardInterrupt."""
    pressed: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    except ValueError:  # not the main thread: signals go to the main thread, nothing to defer here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """``bp-gpu train``: one path for one process and for a data-parallel job's processes
    (``--distributed``: ``bp_gpu/cli/_distributed.py`` gives the process group; a single process is
    a group of one)."""
    from ._distributed import process_group, warn_if_undistributed
    from ._options import check_model_options

    check_model_options(args)
    check_paths(args)  # a bad --out is found now, not after the training
    warn_if_undistributed(args)
    group = process_group(args)
    with group.guard():
        try:
            return _train(args, group)
        except KeyboardInterrupt as exc:
            if group.size > 1:  # the other processes wait in a collective: end the job, saying why
                group.abort(130, f"interrupted {exc}".rstrip())
            raise
        except Exception as exc:
            from ..distributed import raised_on_every_rank

            if group.size > 1 and raised_on_every_rank(exc) and group.rank != 0:
                return 1  # rank 0 prints the error, once
            raise


def _train(args: argparse.Namespace, group: Any) -> int:
    from ..classifier import MLPClassifier, load
    from ._distributed import open_part, total
    from ._options import estimator_params, resume_options
    from ._progress import ProgressMonitor, save_curves

    lead, world = group.rank == 0, group.size  # the lead process prints, draws and writes
    # Before any device memory (a --resume model is loaded onto the current GPU).
    group.agree(lambda: group.use_device(args.backend), "choosing this process's GPU")
    if args.resume:
        clf = group.agree(lambda: load(args.resume, backend=args.backend if "backend" in args.given else None),
                          f"loading {args.resume}")
        applied = group.agree(lambda: resume_options(args, clf), f"checking the options against {args.resume}")
        clf.set_params(distributed=args.distributed)
        remaining = args.epochs - clf.n_iter_
        if remaining < 1:  # the same file on every process: the same verdict
            raise group.everywhere(CLIError(
                f"{args.resume} has already trained {clf.n_iter_} epochs; ask for more with --epochs"))
    else:
        clf = MLPClassifier(**estimator_params(args), early_stopping=args.early_stopping,
                            validation_fraction=args.validation_fraction, standardize=args.standardize,
                            distributed=args.distributed)
        remaining = args.epochs
    data = group.agree(lambda: open_part(args, group, clf if args.resume else None), f"reading {args.data}")
    n_rows = int(total(group, data.n_rows))
    if n_rows == 0:
        raise CLIError(f"{args.data}: the data set has no rows")
    if lead:
        first = clf.n_iter_ + 1 if args.resume else 1
        what = f"epoch{f's {first}-' if first < args.epochs else ' '}{args.epochs}"
        if args.resume:
            what += f" of {args.resume}"
        ignored = f", ignoring {', '.join(data.ignored_columns)}" if data.ignored_columns else ""
        where = f", data-parallel on {world} processes" if world > 1 else ""
        print(f"training on {n_rows} rows, {data.n_features} features of {args.data}{ignored}{where}: {what}, "
              f"saving to {args.out}", flush=True)
        if args.resume and applied:
            print(f"resuming with {', '.join(applied)} (the rest as saved in {args.resume})", flush=True)
    # The bar after the lines above: it draws itself at once, and a line printed later would run into it.
    monitor = ProgressMonitor(
        n_rows,  # the bar corrects itself to the training rows after an epoch (early stopping)
        remaining,
        quiet=args.quiet or not lead,
        checkpoint=(args.out, args.checkpoint_every) if args.checkpoint_every and lead else None,
        epoch_lines=world > 1,  # mpiexec pipes stderr: a line per epoch where no bar can be drawn
    )
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
    if lead:
        for w in caught:
            print(f"bp-gpu train: {w.message}", file=sys.stderr)
    done = clf.n_iter_ - (args.epochs - remaining)
    try:
        if lead:
            with ctrl_c_deferred():  # a second Ctrl-C (the first stopped the training) waits for the file
                clf.save(args.out)
            rate = monitor.rows_seen / seconds if seconds > 0 else float("nan")
            on = f"data-parallel on {world} process(es), backend" if world > 1 else "on backend"
            print(f"{'interrupted: ' if interrupted else ''}trained {done} epoch(s) ({clf.n_iter_} in total) {on} "
                  f"{clf.net_.backend} in {seconds:.2f} s ({rate:,.0f} samples/s)")
            print(f"saved {args.out}", flush=True)
        if interrupted and world > 1:
            # Only this process stopped (bp_gpu.distributed keeps the last epoch on rank 0 for bp-gpu
            # train); the others wait in a collective: the job ends here, its model saved.
            group.abort(130, f"interrupted: the last completed epoch ({clf.n_iter_} in total) is saved in {args.out}")
        # The training accuracy is one more pass over the data: a Ctrl-C during it loses nothing.
        hits = total(group, round(clf.score(data) * data.n_rows))
        if lead:
            print(f"network {list(clf.net_.layer_sizes)}, final training loss {clf.loss_curve_[-1]:.6f}, "
                  f"training accuracy {hits / n_rows:.4f}")
            if getattr(clf, "validation_scores_", None):
                print(f"best validation accuracy {clf.best_validation_score_:.4f}")
            if args.plot:
                save_curves(args.plot, clf.loss_curve_, getattr(clf, "validation_scores_", None),
                            "validation accuracy", f"bp-gpu train {args.data}")
                print(f"training curves: {args.plot}")
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"after {args.out} was saved ({clf.n_iter_} epochs in total)") from None
    return 130 if interrupted else 0
