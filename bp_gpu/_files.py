"""Writing files atomically, checking early that they can be written, and cleaning up after a writer
that was killed.

``atomic_write(path)`` writes to a temporary file beside ``path``, named ``.NAME.XXXXXXXX.tmp`` (NAME
the target's file name, 8 characters of ``[a-z0-9_]``), flushes it to disk (``fsync``) and renames it
over ``path`` (``os.replace``): a crash leaves the old file or the new one under ``path``, never a mix,
and an error or an exception in the caller's body removes the temporary.

A writer killed outright (``kill -9``, power loss) cannot remove its temporary. The next
``atomic_write`` of the same target does: it removes every file in the directory whose name matches
that pattern for NAME exactly and which no live process is writing. "Being written" is an advisory
lock (``fcntl.flock``) that a writer holds on its temporary from creation until the rename; the
kernel drops the lock when the writer dies, so an unlocked temporary is a dead writer's. Two
processes saving to the same path at once therefore never remove each other's temporary; both
complete, and the later rename wins. The lock is taken right after the file is created; a writer
then checks that its name still refers to its file (a cleaner may have removed it in between) and
creates another if not. Where ``fcntl`` does not exist (Windows) nothing is locked and leftovers are
not removed.

Errors name the caller's path, never the temporary one (``cannot write /x/m.npz: No space left on
device``).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, see the module docstring
    fcntl = None  # type: ignore[assignment]

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
_TAG_LEN = 8


def _place(path: str) -> tuple[str, str]:
    """(directory as the user would name it, file name) of ``path``."""
    directory, name = os.path.split(path)
    return directory or ".", name


def _named(exc: OSError, path: str) -> OSError:
    """``exc`` (of the same class) saying what could not be written, by the caller's name."""
    return type(exc)(f"cannot write {path}: {exc.strerror or exc}")


def _check_target(path: str) -> tuple[str, str]:
    """The target's (directory, name) once it is known not to be a directory and to lie in an
    existing directory; raises IsADirectoryError / FileNotFoundError / NotADirectoryError."""
    directory, name = _place(path)
    if not name or os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise NotADirectoryError(f"cannot write {path}: {directory} is not a directory")
        raise FileNotFoundError(f"cannot write {path}: the directory {directory} does not exist")
    return directory, name


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    """A new, empty temporary for target ``name`` in ``directory``, locked: (fd, path)."""
    for _ in range(100):
        tag = "".join(secrets.choice(_ALPHABET) for _ in range(_TAG_LEN))
        tmp = os.path.join(directory, f".{name}.{tag}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileExistsError:
            continue
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            mine, now = os.fstat(fd), os.stat(tmp, follow_symlinks=False)
            if (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino):
                return fd, tmp
        except FileNotFoundError:
            pass  # a cleaner took it for a dead writer's between the open and the lock: try again
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
    raise FileExistsError(f"could not create a temporary file for {name} in {directory}")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[str]:
    """Remove the temporaries of target ``path`` that killed writers left; returns their paths.

    Only files named ``.NAME.XXXXXXXX.tmp`` for this NAME (see the module docstring), regular files,
    that no process holds locked. Nothing is removed where ``fcntl`` is missing.
    """
    if fcntl is None:
        return []
    directory, name = _place(os.fspath(path))
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{{_TAG_LEN}}}\.tmp")
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for entry in entries:
        if not pattern.fullmatch(entry):
            continue
        tmp = os.path.join(directory, entry)
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue  # gone already, a symlink, or not ours to read
        try:
            held = os.fstat(fd)
            if not stat.S_ISREG(held.st_mode):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer has it
            now = os.stat(tmp, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                os.unlink(tmp)
                removed.append(tmp)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise an ``OSError`` naming ``path`` unless ``atomic_write(path)`` can write there: ``path`` is
    not a directory, its directory exists and a new file can be created in it (tried, then removed).
    Call it before work whose result goes to ``path``, so a bad target is found at once."""
    path = os.fspath(path)
    directory, name = _check_target(path)
    try:
        fd, tmp = _create_temporary(directory, name)
    except OSError as exc:
        raise _named(exc, path) from None
    os.close(fd)
    _unlink_quietly(tmp)


def overlap(path: str | os.PathLike[str], source: str | os.PathLike[str]) -> str | None:
    """How writing ``path`` would touch the existing file or directory ``source``, or None.

    ``"same"``: ``path`` is ``source`` (the same name, a symlink to it, a hard link of it, or a path
    through a symlinked directory); ``"inside"``: ``source`` is a directory and ``path`` lies in it
    (``path`` would become one of its files); ``"link"``: ``source`` is a directory and ``path`` a
    hard link of (or a symlink to) one of its files. ``atomic_write`` replaces the name it is
    given, so writing ``source``'s own name (or a name through a symlinked directory) destroys it
    and writing a link replaces the link only; callers refuse every case all the same, because an
    output that aliases an input is a mistake, never an intention."""
    path, source = os.fspath(path), os.fspath(source)
    if not os.path.exists(source):
        return None
    exists = os.path.exists(path)
    if exists and os.path.samefile(path, source):
        return "same"
    if not os.path.isdir(source):
        return None
    # The directory part resolved, the name kept: a symlink named like this is checked as a link below.
    folder, name = os.path.split(os.path.abspath(path))
    real, root = os.path.join(os.path.realpath(folder), name), os.path.realpath(source)
    if os.path.commonpath([real, root]) == root:
        return "inside"
    if exists and os.path.isfile(path):
        mine = os.stat(path)
        for folder, _, files in os.walk(source):
            for f in files:
                try:
                    st = os.stat(os.path.join(folder, f))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                    return "link"
    return None


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_write(path, "w", newline="") as f: ...`` writes ``path`` atomically (see the
    module docstring): ``f`` is a file object on the temporary (``open_kwargs`` go to ``open``), which
    replaces ``path`` when the block ends without an exception. The new file gets the mode of the file
    it replaces, or 0o644. Stale temporaries of ``path`` are removed first."""
    path = os.fspath(path)
    directory, name = _check_target(path)
    remove_stale_temporaries(path)
    try:
        fd, tmp = _create_temporary(directory, name)
    except OSError as exc:
        raise _named(exc, path) from None
    lock: int | None = fd  # held open until the rename: closing it would release the lock
    done = False
    try:
        with os.fdopen(os.dup(fd), mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else 0o644)
        if fcntl is None:
            os.close(fd)  # Windows cannot rename an open file (and nothing is locked there)
            lock = None
        os.replace(tmp, path)
        done = True
    except OSError as exc:
        if exc.filename not in (None, tmp):
            raise  # about some other file the caller's block touched
        raise _named(exc, path) from None
    finally:
        if lock is not None:
            os.close(lock)
        if not done:
            _unlink_quietly(tmp)
