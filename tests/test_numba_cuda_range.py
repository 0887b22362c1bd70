"""The numba-cuda versions bp_gpu accepts, and the ones whose launches it packs itself.

What was read, in NVIDIA/numba-cuda (``git show v0.X.Y:numba_cuda/...``, v0.20.0 to v0.30.4):
``numba/cuda/core/errors.py`` (imported by the dispatcher launch) first exists in v0.21.0;
``_Kernel._prepare_args`` and ``_Kernel.bind`` are the same source from v0.25.0 to v0.30.4 (the
comment on ``kernels._launch._PACKED_LAUNCH_MINORS`` lists the rest).
"""

import re
from pathlib import Path

import pytest
from bp_gpu.kernels import _launch

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.parametrize("version,packed", [
    ("0.20.1", False), ("0.24.0", False),  # another _prepare_args (device_ctypes_pointer)
    ("0.25.0", True), ("0.26.0", True), ("0.28.2", True), ("0.30.0", True), ("0.30.4", True),
    ("0.30.5rc1", True),  # a patch release of a minor that was read
    ("0.31.0", False), ("1.0.0", False), ("0.3.0", False), ("dev", False),  # not read (yet)
])
def test_the_packed_launch_is_gated_on_the_versions_that_were_compared(version, packed):
    assert _launch.packed_launch_checked(version) is packed


def test_the_numba_cuda_floor_has_the_modules_bp_gpu_imports():
    floors = re.findall(r'"numba-cuda(?:\[\w+\])?>=([\d.]+)"', PYPROJECT.read_text())
    assert len(floors) == 4  # the dependency, the cuda12, cuda13 and kernels extras
    assert all(tuple(int(x) for x in f.split(".")) >= (0, 21) for f in floors), floors
