"""The ``bp-gpu`` command: one module per subcommand, each with ``register(subparsers)``.

A subcommand's ``run(args) -> int`` raises ordinary exceptions for bad input; ``main`` turns them
into one clear line on stderr and a non-zero exit code, never a traceback: 1 for an error (a missing
extra included), 2 for bad options (argparse's status), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from .. import __version__

# Subcommand modules in the order ``--help`` lists them.
COMMANDS = ["info", "kernels", "demo", "train", "predict", "export", "bench"]


class CLIError(Exception):
    """A user-facing error of a subcommand; its message is printed as it is (exit status 1)."""


class UsageError(CLIError):
    """Options that cannot go together (exit status 2, as argparse's own usage errors)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bp-gpu",
        description="Train sigmoid MLPs by backpropagation on NVIDIA GPUs or any CPU.",
    )
    parser.add_argument("--version", action="version", version=f"bp-gpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:  # its message, if any, says what was kept
        print(f"bp-gpu {args.command}: interrupted{f' {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"bp-gpu {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # whatever read stdout has gone (``| head``): nothing to report
        return 141  # 128 + SIGPIPE, the status a shell gives a command that a pipe ended
    except OSError as exc:
        print(f"bp-gpu {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except (CLIError, ValueError, TypeError, RuntimeError, ImportError) as exc:
        # ImportError: an extra that is not installed; bp_gpu's messages say which to install.
        print(f"bp-gpu {args.command}: error: {exc}", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The ``bp-gpu`` executable and ``python -m bp_gpu.cli``: ``main()``, then the process ends
    with its status as soon as its output is flushed, without the interpreter's teardown.

    A finished command must not fail at exit: pyarrow's CPU thread pool (CSV, Parquet) is shut down
    by a static destructor that can race its own workers and abort the process ("terminate called
    without an active exception", SIGABRT: apache/arrow#34314, open), which we saw about once in 40
    runs of ``bp-gpu train file.csv`` on a loaded machine, after the model was saved. Everything the
    command writes is written and closed before ``main`` returns (files atomically, reader threads
    joined); MPI, where the command started it, is finalized as mpi4py's exit handler would."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``) or a closed stream: nothing to keep
            pass
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
    os._exit(code)


def os_error_message(exc: OSError) -> str:
    """An OSError in the CLI's one wording: ``PATH: no such file or directory``, never ``[Errno 2]
    ...``. bp_gpu's own messages (``cannot write PATH: ...``) are kept as they are."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror[:1].lower()}{exc.strerror[1:]}"
    if exc.errno is not None and exc.strerror:  # OSError(errno, message): the message without "[Errno N]"
        return exc.strerror
    return str(exc)
