"""Run the whole benchmark as a script: ``python bench/run.py [--quick] [--workloads W1,W2] ...``
(the same as ``bp-gpu bench``; bp_gpu must be installed, e.g. ``pip install -e '.[bench]'``)."""

import sys

from bp_gpu.bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
