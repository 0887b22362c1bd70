"""Training feedback for the CLI: a tqdm progress bar (loss, samples/s, ETA) and checkpoints.

tqdm is imported only when a bar is shown, so commands that train quietly, and ``bp-gpu info``,
run without the ``train`` extra. The bar is off with ``--quiet`` or when stderr is not a terminal;
``epoch_lines`` prints a line per epoch there instead (a data-parallel run, whose stderr mpiexec pipes).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..train import EpochInfo


class ProgressMonitor:
    """A ``bp_gpu.train.TrainingMonitor`` for the CLI.

    ``total_epochs`` epochs of ``n_samples`` rows size the bar; ``checkpoint`` (path, every) saves
    the in-progress model every ``every`` epochs; ``on_epoch_extra(info)`` runs after each epoch
    (the demo uses it to score the held-out set).
    """

    def __init__(
        self,
        n_samples: int,
        total_epochs: int,
        *,
        quiet: bool = False,
        desc: str = "training",
        checkpoint: tuple[str, int] | None = None,
        on_epoch_extra: Callable[[EpochInfo], None] | None = None,
        epoch_lines: bool = False,
    ) -> None:
        self.bar: Any = None
        self.epoch_lines = epoch_lines and not quiet
        self.total_epochs = total_epochs
        self.rows_seen = 0  # training rows stepped on, over every epoch
        self.checkpoint = checkpoint
        self.on_epoch_extra = on_epoch_extra
        self.checkpoints_written = 0
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                print(
                    "(no progress bar: tqdm is not installed; pip install 'bp_gpu[train]')",
                    file=sys.stderr,
                )
            else:
                self.bar = tqdm(
                    total=n_samples * total_epochs,
                    unit="sample",
                    unit_scale=True,
                    desc=desc,
                    file=sys.stderr,
                    dynamic_ncols=True,
                    leave=True,
                )

    def on_batch(self, n_rows: int) -> None:
        self.rows_seen += n_rows
        if self.bar is not None:
            self.bar.update(n_rows)

    def on_epoch(self, info: EpochInfo) -> None:
        if self.bar is not None:
            total = info.n_samples * self.total_epochs
            if self.bar.total != total:  # the caller's estimate missed the held-out validation rows
                self.bar.total = total
            post = {"epoch": f"{info.epoch}/{info.last_epoch}", "loss": f"{info.loss:.4f}"}
            if info.validation_score is not None:
                post["val_acc"] = f"{info.validation_score:.4f}"
            self.bar.set_postfix(post, refresh=False)
        elif self.epoch_lines:
            val = "" if info.validation_score is None else f", validation accuracy {info.validation_score:.4f}"
            print(f"epoch {info.epoch}/{info.last_epoch}: loss {info.loss:.6f}{val}, {info.seconds:.2f} s",
                  file=sys.stderr, flush=True)
        if self.checkpoint is not None and info.epoch % self.checkpoint[1] == 0:
            info.model().save(self.checkpoint[0])
            self.checkpoints_written += 1
        if self.on_epoch_extra is not None:
            self.on_epoch_extra(info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def save_curves(
    path: str, loss: list[float], score: list[float] | None, score_label: str, title: str
) -> None:
    """PNG of the loss per epoch (left) and, if given, an accuracy per epoch (right); Agg backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'bp_gpu[train]'") from None
    epochs = range(1, len(loss) + 1)
    ncols = 2 if score else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(epochs, loss, color="tab:blue")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if score:
        ax = axes[0, 1]
        ax.plot(range(1, len(score) + 1), score, color="tab:green")
        ax.set_xlabel("epoch")
        ax.set_ylabel(score_label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
