"""``bp-gpu bench``: one training epoch of bp_gpu next to PyTorch, scikit-learn and plain NumPy.

Fresh processes per peer and repeat, alternating; kernel microbenchmarks (copy bandwidth, GEMM
ceiling, fused vs unfused steps); a table on the terminal, results.json and ratios.png in --out.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..bench.harness import add_arguments

    p = sub.add_parser("bench", help="benchmark against PyTorch, scikit-learn and NumPy",
                       description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.harness import run as run_bench

    return run_bench(args)
