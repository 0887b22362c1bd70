"""``python -m bp_gpu.cli`` is ``bp-gpu``."""

from . import run

run()
