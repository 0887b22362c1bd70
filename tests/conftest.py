"""Test setup shared by every test: seeded randomness, and the split between the two processes.

The CUDA-simulator tests (tests/sim) only run with NUMBA_ENABLE_CUDASIM=1 and everything else only
without it, so ``pytest`` and ``NUMBA_ENABLE_CUDASIM=1 pytest tests/sim`` never mix the two.
"""

import os

import numpy as np
import pytest

_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
collect_ignore_glob = [] if _SIM else ["sim/*"]


def pytest_collection_modifyitems(config, items):
    if not _SIM:
        return
    for item in items:
        if "tests/sim/" not in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.skip(reason="only tests/sim runs under NUMBA_ENABLE_CUDASIM=1"))


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
