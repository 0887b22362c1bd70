"""``bp-gpu train``'s model options: the ``MLPClassifier`` they build, and the checks of those given
with ``--resume`` against the saved model (shared by the one-process and the data-parallel run)."""

from __future__ import annotations

import argparse
from typing import Any

from . import UsageError


def _shown(dest: str, value: object) -> str:
    if dest == "hidden":
        return ",".join(map(str, value)) or "none"
    return str(value)


# The options that --resume applies when given (partial_fit may change them between calls).
CHANGEABLE = ("learning_rate", "lr_schedule", "warmup_epochs", "final_learning_rate", "momentum", "batch_size",
              "weight_decay", "backend")


def resume_options(args: argparse.Namespace, clf: object) -> list[str]:
    """Check the options given with ``--resume`` against the loaded model ``clf``: those its saved
    state decides (architecture, optimizer, dtype, precision, seed, standardisation) must agree with
    it, early stopping cannot apply (``partial_fit`` never stops early); the ones that may change
    between ``partial_fit`` calls are set on ``clf``, and its ``epochs`` to ``--epochs``, the total
    to train to. Returns the changed options as ``--option value`` strings; raises UsageError."""
    for dest in ("early_stopping", "validation_fraction"):
        if dest in args.given:
            raise UsageError(
                f"--{dest.replace('_', '-')} cannot be used with --resume: a resumed run trains on all "
                "rows and never stops early"
            )
    saved = {"hidden": tuple(clf.net_.layer_sizes[1:-1]), "optimizer": clf.optimizer,
             "dtype": clf.net_.dtype.name, "precision": clf.net_.precision, "seed": clf.random_state,
             "standardize": clf.feature_mean_ is not None}
    bad = [f"--{dest} {_shown(dest, getattr(args, dest))} (the model has {_shown(dest, have)})"
           for dest, have in saved.items() if dest in args.given and getattr(args, dest) != have]
    if bad:
        raise UsageError(
            f"--resume {args.resume} continues the saved model, and these options contradict it: "
            f"{', '.join(bad)}; drop them, or train a new model without --resume"
        )
    applied = []
    for dest in CHANGEABLE:
        if dest in args.given:
            applied.append(f"--{dest.replace('_', '-')} {getattr(args, dest)}")
            if dest != "backend":  # the backend was applied by load
                clf.set_params(**{dest: getattr(args, dest)})
    # --epochs is the total the resumed run trains to: the saved model then says how it was trained.
    clf.set_params(epochs=args.epochs)
    return applied


def estimator_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``MLPClassifier`` parameters of the model options (``add_model_options``)."""
    return dict(
        hidden_layer_sizes=args.hidden, optimizer=args.optimizer, learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs, final_learning_rate=args.final_learning_rate,
        momentum=args.momentum, batch_size=args.batch_size, epochs=args.epochs, weight_decay=args.weight_decay,
        dtype=args.dtype, precision=args.precision, backend=args.backend, random_state=args.seed,
    )


def check_model_options(args: argparse.Namespace) -> None:
    """The model options that are wrong together, found with the others (a usage error)."""
    if args.precision != "highest" and args.dtype != "float32" and not getattr(args, "resume", None):
        raise UsageError(f"--precision {args.precision} needs --dtype float32 (float32 master weights, "
                         f"{args.precision} GEMM operands); got --dtype {args.dtype}")
