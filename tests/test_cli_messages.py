"""What the commands print, in which order, and what a missing extra or a second Ctrl-C says."""

import io
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import bp_gpu
from bp_gpu.cli import main

pytest.importorskip("pyarrow")
pytest.importorskip("tqdm")


@pytest.fixture
def csv_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    lines = ["a,b,label"] + [f"{a},{b},{'yes' if a > b else 'no'}" for a, b in X]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "d.csv"


def test_a_missing_extra_is_one_line_not_a_traceback(tmp_path, csv_file):
    # pyarrow made unimportable, as in an environment with bp_gpu[train] before it held pyarrow.
    bp_gpu.MLPClassifier((3,), epochs=1, backend="cpu", random_state=0).fit(
        np.zeros((4, 2)), [0, 1, 0, 1]).save(tmp_path / "m.npz")
    code = f"""
import sys
sys.modules["pyarrow"] = None
from bp_gpu.cli import main
print(main(["train", {str(csv_file)!r}, "--target", "label", "--out", {str(tmp_path / "n.npz")!r}]),
      main(["predict", {str(tmp_path / "m.npz")!r}, {str(csv_file)!r}]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["1", "1"], r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        f"bp-gpu {command}: error: reading CSV files needs pyarrow: pip install 'bp_gpu[data]'"
        for command in ("train", "predict")]


def test_the_train_extra_brings_what_train_needs_for_every_format():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    train = re.search(r"^train = \[(.*)\]$", (root / "pyproject.toml").read_text(), re.M).group(1)
    assert '"pyarrow>=' in train
    readme = (root / "README.md").read_text()
    own_file = readme[readme.index("Train on your own file"):]
    assert own_file.index("pip install -e '.[train]'") < own_file.index("bp-gpu train data.parquet")


class _Terminal(io.StringIO):
    """stdout and stderr as one terminal: the progress bar is drawn, and the order is what a user sees."""

    def isatty(self):
        return True


def test_the_start_line_comes_before_the_progress_bar(monkeypatch, tmp_path, csv_file):
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    monkeypatch.setattr(sys, "stderr", term)
    code = main(["train", str(csv_file), "--target", "label", "--epochs", "2", "--backend", "cpu", "--out",
                 str(tmp_path / "m.npz")])
    text = term.getvalue()
    assert code == 0, text
    start = text.index("training on 60 rows")
    assert start == 0 and "sample" in text[start:], text  # the bar (samples/s) is drawn after the line, not into it


def test_no_rows_is_an_error_without_a_start_line(capsys, tmp_path):
    (tmp_path / "empty.csv").write_text("a,b,label\n")
    assert main(["train", str(tmp_path / "empty.csv"), "--target", "label", "--out", str(tmp_path / "m.npz")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"bp-gpu train: error: {tmp_path / 'empty.csv'}: the data set has no rows"


def test_a_ctrl_c_after_the_model_is_saved_says_so(capsys, monkeypatch, tmp_path, csv_file):
    from bp_gpu.classifier import MLPClassifier

    def interrupted(self, *args, **kwargs):  # Ctrl-C during the training accuracy's pass over the data
        raise KeyboardInterrupt

    monkeypatch.setattr(MLPClassifier, "score", interrupted)
    out = tmp_path / "m.npz"
    code = main(["train", str(csv_file), "--target", "label", "--epochs", "2", "--backend", "cpu", "--quiet",
                 "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 130 and f"saved {out}" in stdout.splitlines()
    assert stderr.strip() == f"bp-gpu train: interrupted after {out} was saved (2 epochs in total)"
    assert bp_gpu.load(out).n_iter_ == 2


def test_a_ctrl_c_while_saving_waits_for_the_file(capsys, monkeypatch, tmp_path, csv_file):
    from bp_gpu.classifier import MLPClassifier

    save = MLPClassifier.save

    def save_with_ctrl_c(self, path):
        os.kill(os.getpid(), signal.SIGINT)  # delivered while the file is being written
        save(self, path)

    monkeypatch.setattr(MLPClassifier, "save", save_with_ctrl_c)
    out = tmp_path / "m.npz"
    # Python's own handler, or SIG_IGN where the tests were started in the background (nohup, &)
    before = signal.getsignal(signal.SIGINT)
    code = main(["train", str(csv_file), "--target", "label", "--epochs", "2", "--backend", "cpu", "--quiet",
                 "--out", str(out)])
    _, stderr = capsys.readouterr()
    assert code == 130 and stderr.strip() == f"bp-gpu train: interrupted after {out} was saved (2 epochs in total)"
    assert bp_gpu.load(out).n_iter_ == 2 and os.listdir(tmp_path) == ["d.csv", "m.npz"]
    assert signal.getsignal(signal.SIGINT) is before  # put back as it was
