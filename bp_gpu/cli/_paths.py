"""The paths a command reads and writes, checked before it reads anything.

An input must exist; an output must be writable (``bp_gpu._files.check_writable``) and must not
be one of the command's inputs, lie inside a data directory, or be another of its outputs: saving
a model over the training data, or predictions over the model, would destroy what the command was
given. Errors use one wording everywhere: ``PATH: no such file or directory`` for an input,
``cannot write PATH: ...`` for an output, ``--out PATH is also DATA ...`` for a clash.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from . import CLIError, UsageError


def check_input(path: str) -> None:
    """Raise ``CLIError`` (``PATH: no such file or directory``) unless ``path`` exists."""
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file or directory")


def _name(path: str) -> str:
    """``path`` with its directory resolved and its last name kept: what ``os.replace`` replaces."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(folder), name)


def _same(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(
    outputs: Sequence[tuple[str, str | None]],
    inputs: Sequence[tuple[str, str | None, str]],
    allowed: Iterable[tuple[str, str]] = (),
) -> None:
    """``outputs``: ``(option, path or None)``; ``inputs``: ``(option, path or None, what it holds)``,
    e.g. ``("DATA", args.data, "the training data")``; ``allowed``: ``(output option, input option)``
    pairs that may be the same file (``--out`` over ``--resume``: continuing a model in place).
    Raises ``UsageError`` (exit status 2) for a clash, an ``OSError`` naming the path for an output
    that cannot be written."""
    from .._files import check_writable, overlap

    allowed = set(allowed)
    seen: list[tuple[str, str]] = []
    for option, path in outputs:
        if path is None:
            continue
        for name, source, what in inputs:
            if source is None or (option, name) in allowed:
                continue
            how = overlap(path, source)
            if how == "same" and _name(path) == _name(source):
                raise UsageError(f"{option} {path} is also {name}: writing it would destroy {what}; choose another "
                                 f"path for {option}")
            if how == "same":
                raise UsageError(f"{option} {path} is {name} {source} under another name (a link); choose another "
                                 f"path for {option}")
            if how == "inside":
                raise UsageError(f"{option} {path} is inside {name} {source}, a directory whose every file is read "
                                 f"as {what}; choose a path outside it for {option}")
            if how == "link":
                raise UsageError(f"{option} {path} is a link to a file of {name} {source}, {what}; choose another "
                                 f"path for {option}")
        for other, earlier in seen:
            if _same(path, earlier):
                raise UsageError(f"{option} {path} is also {other}: choose different paths for the two")
        seen.append((option, path))
    for _, path in seen:
        check_writable(path)
