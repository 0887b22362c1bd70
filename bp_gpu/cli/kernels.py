"""``bp-gpu kernels``: compile every CUDA kernel for a GPU target and print its resource use.

Needs no GPU: the kernels are compiled with NVRTC and linked with nvJitLink (``pip install
'bp_gpu[kernels]'``); the table shows registers, spilled bytes, static shared memory, local memory
and PTX size per kernel and dtype, the numbers to watch when tuning a kernel.
"""

from __future__ import annotations

import argparse


def _cc(text: str) -> tuple[int, int]:
    try:
        major, minor = (int(x) for x in text.split("."))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cc must look like 9.0 (major.minor); got {text!r}") from None
    return major, minor


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernels", help="compile the CUDA kernels and show registers/spills/shared memory",
                       description=__doc__)
    p.add_argument("--cc", type=_cc, default=(9, 0), metavar="MAJOR.MINOR",
                   help="compute capability to compile for (default 9.0, H100/H200; 8.0 for A100)")
    p.add_argument("--dtype", choices=("float32", "float64"), action="append",
                   help="only this dtype (repeatable; default both)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..kernel_report import DTYPES, format_table, report

    rows = report(tuple(args.cc), tuple(args.dtype) if args.dtype else DTYPES)
    print(format_table(rows))
    spilled = [f"{r.kernel} ({r.dtype})" for r in rows if r.spills]
    if spilled:
        print(f"warning: spills in {', '.join(spilled)}")
    return 0
