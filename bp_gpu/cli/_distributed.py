"""``bp-gpu train --distributed``: the process group and this process's part of the data, for the
train command's one path (``bp_gpu/cli/train.py``) as one process of a data-parallel job.

Under ``mpiexec -n N bp-gpu train DATA --target COL ... --distributed`` every process opens DATA
with ``bp_gpu.data`` and reads only its own part (``Dataset.shard(rank, N)``: a row range of a
memory-mapped ``.npy``/``.npz``, a range of a CSV's byte chunks, of Parquet row groups or Arrow
record batches), then trains ``MLPClassifier(distributed=True)`` on it. Rank 0 alone prints (the
start line, then a progress bar on a terminal or, as under mpiexec, a line per epoch) and writes the
checkpoints and the model (saving is a local call). An error in the input is printed once and every
process exits with status 1; an error on one process only ends the whole job (``MPI_Abort``).
Ctrl-C (mpiexec forwards it to every process) stops rank 0's epoch loop at the last completed
epoch, rank 0 saves that model to --out, as a single process does, and ends the job (status 130).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

from . import CLIError

# A CSV is cut into byte chunks and a shard is a range of chunks: smaller chunks than the reader's
# default give every process a share of a small file too (at least this many bytes each).
_MIN_CSV_CHUNK = 1 << 12


def launcher_world() -> tuple[int, int]:
    """(processes, this one's rank) of the job a launcher started this process in, read from the
    variables the launchers set (MPICH's and Intel MPI's Hydra: PMI_SIZE/PMI_RANK; Open MPI:
    OMPI_COMM_WORLD_SIZE/RANK; MVAPICH: MV2_COMM_WORLD_SIZE/RANK; Slurm's srun:
    SLURM_STEP_NUM_TASKS/SLURM_PROCID), without starting MPI: (1, 0) outside a launcher."""
    for size, rank in (("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                       ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"), ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID")):
        try:
            return int(os.environ[size]), int(os.environ.get(rank, "0"))
        except (KeyError, ValueError):
            continue
    return 1, 0


def warn_if_undistributed(args: argparse.Namespace) -> None:
    """N processes started by mpiexec (or srun) without --distributed would each train a model on all
    of DATA and write it to --out: said once, by the first process."""
    world, rank = launcher_world()
    if world > 1 and not args.distributed and rank == 0:
        print(f"bp-gpu train: warning: this is one of {world} processes started by a launcher (mpiexec, srun), and "
              "--distributed is not given: each process trains its own model on all of DATA and writes --out; "
              "add --distributed to train one model data-parallel", file=sys.stderr, flush=True)


def process_group(args: argparse.Namespace) -> Any:
    """The processes this run trains across: with --distributed the MPI world (a single process is a
    group of one), else this process alone. Ctrl-C in a data-parallel run keeps the last completed
    epoch on rank 0, which saves it and ends the job (``ProcessGroup.interrupt``)."""
    from ..group import LocalGroup

    if not args.distributed:
        return LocalGroup()
    from ..distributed import world_group

    try:
        group = world_group()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    group.interrupt = "keep"
    return group


def total(group: Any, value: float) -> float:
    """``value`` summed over the processes."""
    a = np.array([value], dtype=np.float64)
    group.sum(a, "summing over the processes")
    return float(a[0])


def open_part(args: argparse.Namespace, group: Any, model: Any = None) -> Any:
    """This process's part of DATA (the options of ``bp-gpu train``'s own reader): all of it for a
    single process."""
    from ..data import detect_format
    from ..data.csv import CHUNK_BYTES
    from ._dataset import open_data

    rank, world = group.rank, group.size
    kw: dict[str, Any] = {}
    if os.path.isfile(args.data) and detect_format(args.data) == "csv" and world > 1:
        kw["chunk_bytes"] = min(CHUNK_BYTES, max(_MIN_CSV_CHUNK, os.path.getsize(args.data) // (8 * world)))
    ds = open_data(args, args.target, model, **kw)
    if world == 1:
        return ds
    part = ds.shard(rank, world)
    if part.n_rows == 0:
        raise ValueError(f"{args.data} has no rows for this process ({world} processes, {ds.n_chunks} chunks); "
                         "use fewer processes")
    return part
