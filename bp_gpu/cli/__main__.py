"""``python -m bp_gpu.cli`` is ``bp-gpu``."""

import sys

from . import main

sys.exit(main())
