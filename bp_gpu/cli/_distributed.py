"""``bp-gpu train --distributed``: the train command as one process of a data-parallel job.

Under ``mpiexec -n N bp-gpu train DATA --target COL ... --distributed`` every process opens DATA
with ``bp_gpu.data`` and reads only its own part (``Dataset.shard(rank, N)``: a row range of a
memory-mapped ``.npy``/``.npz``, a range of a CSV's byte chunks, of Parquet row groups or Arrow
record batches), then trains ``MLPClassifier(distributed=True)`` on it. Rank 0 alone prints and
draws the progress bar; rank 0 alone writes the checkpoints and the model (saving is a local call). An error
in the input is printed once and every process exits with status 1; an error on one process only,
or Ctrl-C, ends the whole job (``MPI_Abort``; status 130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from . import CLIError

# A CSV is cut into byte chunks and a shard is a range of chunks: smaller chunks than the reader's
# default give every process a share of a small file too (at least this many bytes each).
_MIN_CSV_CHUNK = 1 << 12


def _open_shard(args: argparse.Namespace, rank: int, world: int, model: Any = None) -> Any:
    """This process's part of DATA (the options of ``bp-gpu train``'s own reader)."""
    from ..data import detect_format
    from ..data.csv import CHUNK_BYTES
    from ._dataset import open_data

    kw: dict[str, Any] = {}
    if os.path.isfile(args.data) and detect_format(args.data) == "csv" and world > 1:
        kw["chunk_bytes"] = min(CHUNK_BYTES, max(_MIN_CSV_CHUNK, os.path.getsize(args.data) // (8 * world)))
    ds = open_data(args, args.target, model, **kw)
    part = ds.shard(rank, world)
    if part.n_rows == 0:
        raise ValueError(f"{args.data} has no rows for this process ({world} processes, {ds.n_chunks} chunks); "
                         "use fewer processes")
    return part


def run_distributed(args: argparse.Namespace) -> int:
    """``bp-gpu train`` with ``--distributed`` (a single process is a group of one)."""
    from ..distributed import raised_on_every_rank, world_group

    try:
        group = world_group()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    with group.guard():
        try:
            return _train(args, group)
        except Exception as exc:
            if raised_on_every_rank(exc) and group.rank != 0:
                return 1  # rank 0 prints the error, once
            raise


def _train(args: argparse.Namespace, group: Any) -> int:
    from ..classifier import MLPClassifier, load
    from ._options import estimator_params, resume_options
    from ._progress import ProgressMonitor, save_curves

    rank, world, agree = group.rank, group.size, group.agree

    def total(*values: float) -> np.ndarray:
        a = np.array(values, dtype=np.float64)
        group.sum(a, "summing over the processes")
        return a

    # Before any device memory (a --resume model is loaded onto the current GPU).
    agree(lambda: group.use_device(args.backend), "choosing this process's GPU")
    if args.resume:
        clf = agree(lambda: load(args.resume, backend=args.backend if "backend" in args.given else None),
                    f"loading {args.resume}")
        agree(lambda: resume_options(args, clf), f"checking the options against {args.resume}")
        clf.set_params(distributed=True)
        remaining = args.epochs - clf.n_iter_
        if remaining < 1:  # the same file on every process: the same verdict
            err = CLIError(f"{args.resume} has already trained {clf.n_iter_} epochs; ask for more with --epochs")
            raise group.everywhere(err)
    else:
        clf = MLPClassifier(
            **estimator_params(args), early_stopping=args.early_stopping,
            validation_fraction=args.validation_fraction, standardize=args.standardize, distributed=True,
        )
        remaining = args.epochs
    data = agree(lambda: _open_shard(args, rank, world, clf if args.resume else None), f"reading {args.data}")
    n_rows = int(total(data.n_rows)[0])
    n_train = n_rows
    if clf.early_stopping and not args.resume:
        n_train -= int(round(args.validation_fraction * n_train))
    # Rank 0 alone writes checkpoints and the model: saving is local, and its file holds every
    # process's shuffle generator.
    monitor = ProgressMonitor(
        n_train, remaining, quiet=args.quiet or rank != 0,
        checkpoint=(args.out, args.checkpoint_every) if args.checkpoint_every and rank == 0 else None,
    )
    t0 = time.perf_counter()
    try:
        if args.resume:
            clf.partial_fit(data, epochs=remaining, monitor=monitor)
        else:
            clf.fit(data, monitor=monitor)
    finally:
        monitor.close()
    seconds = time.perf_counter() - t0
    done = clf.n_iter_ - (args.epochs - remaining)
    if rank == 0:
        clf.save(args.out)
    hits = total(round(clf.score(data) * data.n_rows))[0]
    if rank == 0:
        rate = done * n_train / seconds if seconds > 0 else float("nan")
        print(f"trained {done} epoch(s) ({clf.n_iter_} in total) data-parallel on {world} process(es), backend "
              f"{clf.net_.backend}, in {seconds:.2f} s ({rate:,.0f} samples/s)")
        print(f"network {list(clf.net_.layer_sizes)}, final training loss {clf.loss_curve_[-1]:.6f}, "
              f"training accuracy {hits / n_rows:.4f}")
        if getattr(clf, "validation_scores_", None):
            print(f"best validation accuracy {clf.best_validation_score_:.4f}")
        print(f"saved {args.out}")
        if args.plot:
            save_curves(args.plot, clf.loss_curve_, getattr(clf, "validation_scores_", None),
                        "validation accuracy", f"bp-gpu train {args.data}")
            print(f"training curves: {args.plot}")
    return 0
