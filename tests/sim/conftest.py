"""Fixtures of the simulator tests: the order in which simulated blocks run.

Numba's simulator runs the blocks of a grid one after the other, in ``numpy.ndindex`` order
(numba_cuda/numba/cuda/simulator/kernel.py, ``FakeCUDAKernel.__call__``), so the last block to
finish is always the last block of the grid. The one-launch reductions must not depend on which
block finishes last: ``block_order`` reruns a kernel with the blocks (and the start of their
threads, ``BlockManager.run``) in reversed and in shuffled order.
"""

import numpy as np
import pytest


class _OrderedNumPy:
    """numpy, except that ``ndindex`` yields its indices in a chosen order."""

    def __init__(self, order: str) -> None:
        self.order = order
        self.rng = np.random.default_rng(7)

    def __getattr__(self, name):
        return getattr(np, name)

    def ndindex(self, *shape):
        idx = list(np.ndindex(*shape))
        if self.order == "reversed":
            idx.reverse()
        else:
            self.rng.shuffle(idx)
        return iter(idx)


@pytest.fixture(params=["in order", "reversed", "shuffled"])
def block_order(request, monkeypatch):
    """The order in which the simulator runs blocks for this test (by name)."""
    if request.param != "in order":
        from numba.cuda.simulator import kernel as simulated

        monkeypatch.setattr(simulated, "np", _OrderedNumPy(request.param))
    return request.param
