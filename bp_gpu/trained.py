"""A trained classifier's state, apart from the estimator that holds it: what the training pipeline
returns, what a model file stores beside the hyperparameters, and what ``MLPClassifier`` installs in
one step when a fit succeeds (so a failed fit leaves the estimator as it was)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .mlp import MLP
from .optim import Optimizer
from .standardize import Standardizer
from .train import TrainState


@dataclass
class TrainedModel:
    """``net`` the network; ``optimizer`` its optimizer (state on the device) and ``optimizer_name``
    the ``optimizer=`` name it was built from; ``state`` the epoch loop's state (shuffle generator,
    loss curve, early-stopping counters); ``label_kind`` and ``classes`` (``bp_gpu.labels``);
    ``scaler`` the standardisation or None; ``feature_names`` the column names fitted on, or None;
    ``early_stopping`` whether the fit held out validation rows; ``group`` the process group that
    trained it in this process (None for a model read from a file), so that training it again in the
    same group needs no hand-over."""

    net: MLP
    optimizer: Optimizer
    optimizer_name: str
    state: TrainState
    label_kind: str
    classes: np.ndarray
    scaler: Standardizer | None = None
    feature_names: np.ndarray | None = None
    early_stopping: bool = False
    group: Any = None

    @property
    def n_features(self) -> int:
        return self.net.layer_sizes[0]
