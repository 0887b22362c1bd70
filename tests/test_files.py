"""bp_gpu._files: atomic writes, early writability checks, and the cleanup of a killed writer's
temporaries (a real kill -9 in the middle of a save)."""

import fcntl
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import bp_gpu
from bp_gpu import MLPClassifier
from bp_gpu._files import atomic_write, check_writable, remove_stale_temporaries

KW = dict(hidden_layer_sizes=(6,), batch_size=16, learning_rate=0.05, backend="cpu", random_state=0)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    return MLPClassifier(epochs=2, **KW).fit(X, (X[:, 0] > 0).astype(int))


def _leftover(directory, name, tag="abcd_123"):
    p = directory / f".{name}.{tag}.tmp"
    p.write_bytes(b"half a model")
    return p


def test_atomic_write_replaces_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with atomic_write(target, "w") as f:
        f.write("new\n")
        assert target.read_text() == "old\n"  # not visible until the rename
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["out.csv"]


def test_atomic_write_error_in_the_body_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target, "w") as f:
        f.write("partial")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["out.csv"]


def test_write_errors_name_the_target_not_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "m.npz"
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device") as e:
        with atomic_write(target) as f:
            f.write(b"x")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert ".tmp" not in str(e.value) and os.listdir(tmp_path) == []


@pytest.mark.parametrize("where, exc, match", [
    ("{d}", IsADirectoryError, "cannot write {d}: it is a directory"),
    ("{d}/no/such/dir/m.npz", FileNotFoundError, "cannot write {d}/no/such/dir/m.npz: the directory "
     "{d}/no/such/dir does not exist"),
    ("{d}/afile/m.npz", NotADirectoryError, "cannot write {d}/afile/m.npz: {d}/afile is not a directory"),
])
def test_save_to_a_bad_place_names_the_users_path(tmp_path, fitted, where, exc, match):
    (tmp_path / "afile").write_text("")
    path = where.format(d=tmp_path)
    for call in (check_writable, fitted.save):
        with pytest.raises(exc) as e:
            call(path)
        assert str(e.value) == match.format(d=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_check_writable_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(PermissionError, match=f"cannot write {ro}/m.npz: Permission denied"):
            check_writable(ro / "m.npz")
    finally:
        ro.chmod(0o700)


def test_check_writable_leaves_no_file(tmp_path):
    check_writable(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_the_same_target_are_removed_on_the_next_save(tmp_path, fitted):
    stale = _leftover(tmp_path, "m.npz")
    other_target = _leftover(tmp_path, "other.npz")
    not_ours = [tmp_path / ".m.npz.toolong123.tmp", tmp_path / ".m.npz.abc.tmp", tmp_path / "m.npz.abcd_123.tmp"]
    for p in not_ours:
        p.write_bytes(b"")
    busy = _leftover(tmp_path, "m.npz", "busy_567")
    with open(busy, "rb") as held:  # another process is writing this one: it holds the lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        fitted.save(tmp_path / "m.npz")
        assert busy.exists()
    assert not stale.exists()
    assert other_target.exists() and all(p.exists() for p in not_ours)
    assert remove_stale_temporaries(tmp_path / "m.npz") == [str(busy)]  # released now: stale


def test_a_save_killed_with_sigkill_leaves_a_temporary_that_the_next_save_removes(tmp_path, fitted):
    fitted.save(tmp_path / "m.npz")
    before = (tmp_path / "m.npz").read_bytes()
    # A process that dies by SIGKILL after writing part of the archive into the temporary.
    code = f"""
import os, signal
import numpy as np
import bp_gpu

clf = bp_gpu.load({str(tmp_path / "m.npz")!r})
def write_then_die(fp, array, **kw):  # the first array of the archive, half written
    fp.write(b"half an array")
    fp.flush()
    os.kill(os.getpid(), signal.SIGKILL)
np.lib.format.write_array = write_then_die
clf.save({str(tmp_path / "m.npz")!r})
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = [n for n in os.listdir(tmp_path) if n != "m.npz"]
    assert len(left) == 1 and left[0].startswith(".m.npz.") and left[0].endswith(".tmp")
    assert (tmp_path / "m.npz").read_bytes() == before  # the model itself is intact
    fitted.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == ["m.npz"]
    assert bp_gpu.load(tmp_path / "m.npz").n_iter_ == fitted.n_iter_
