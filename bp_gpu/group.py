"""The processes a training run agrees across: a single process is a group of one.

Training has one path (``bp_gpu.pipeline``). The few steps in it that must agree across the
processes of a data-parallel job (the hyperparameters, the feature names, the union of the labels,
the standardisation's moments, the same start, the validation score, input errors raised on every
process) call the collectives of a process group. ``LocalGroup`` is the group of one process, whose
collectives are identities, as Horovod treats ``size() == 1`` and XGBoost's ``collective`` an
uninitialised communicator; ``bp_gpu.distributed.ProcessGroup`` is a group of MPI processes, with
the same methods. So the pipeline has no "distributed" branch, only collective calls.

The interface (both classes):

- ``rank``, ``size``; ``holds_shards_in_memory``: a data set given to ``fit`` is this process's
  shard and is read into memory (so that N processes step exactly as one process on the union of
  their batches; the group of one streams it instead);
- ``guard()``: a context in which an error only this process sees ends the whole job;
- ``agree(fn, what)``: ``fn()`` on every process, and if it raised anywhere, the same error on
  every process; ``everywhere(exc)``: an error computed from gathered data (raised everywhere);
- ``allgather(obj, what)``, ``sum(host_array, what)``: the collectives;
- ``use_device(backend)``, ``check_devices()``: one GPU per process;
- ``start(net, state, split_rng)``: rank 0's initial weights and generators everywhere;
- ``adopt(model, params)``: a model this group did not train (loaded from a file) made ready to
  continue (``params``: the estimator's hyperparameters);
- ``batch_source(local, engine)``: the training batches of this process as the epoch loop's source
  (for MPI: each step's gradient all-reduced);
- ``after_training(state, source)``: what the model keeps of the group (every process's shuffle
  generator, so that any one process can save a resumable file).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


class LocalGroup:
    """One process training on its own: every collective is the identity."""

    rank, size = 0, 1
    holds_shards_in_memory = False

    def __repr__(self) -> str:
        return "<bp_gpu LocalGroup: one process>"

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        yield

    def agree(self, fn: Callable[[], Any], what: str) -> Any:
        return fn()

    def everywhere(self, exc: Exception) -> Exception:
        return exc

    def allgather(self, obj: Any, what: str) -> list[Any]:
        return [obj]

    def sum(self, a: np.ndarray, what: str) -> None:
        pass

    def use_device(self, backend: str) -> None:
        pass

    def check_devices(self) -> None:
        pass

    def start(self, net: Any, state: Any, split_rng: np.random.Generator | None) -> np.random.Generator | None:
        return split_rng

    def adopt(self, model: Any, params: dict[str, Any]) -> None:
        pass

    def batch_source(self, local: Any, engine: Any) -> Any:
        return local

    def after_training(self, state: Any, source: Any) -> None:
        state.rank = 0
