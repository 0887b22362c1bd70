"""What the commands write, checked against what they read before anything is read: an output may
not be (a link to) an input or lie in a data directory; missing files are named in one wording."""

import os

import numpy as np
import pytest

import bp_gpu
from bp_gpu._files import overlap
from bp_gpu.cli import main

pytest.importorskip("pyarrow")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path):
    """A CSV file, a model trained on it, a Parquet directory; their bytes, to check nothing changed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    lines = ["a,b,label"] + [f"{a},{b},{'yes' if a > b else 'no'}" for a, b in X]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    bp_gpu.MLPClassifier((3,), epochs=1, backend="cpu", random_state=0).fit(
        X, np.where(X[:, 0] > X[:, 1], "yes", "no")).save(tmp_path / "m.npz")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "label": X[:, 0] > X[:, 1]}), tmp_path / "pq" / "0.parquet")
    inputs = (tmp_path / "d.csv", tmp_path / "m.npz", tmp_path / "pq" / "0.parquet")
    return tmp_path, {p: p.read_bytes() for p in inputs}


def _refused(r, *fragments):
    code, out, err = r
    assert code == 2 and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1, err
    for f in fragments:
        assert f in err, err


TRAIN = ["--epochs", "1", "--backend", "cpu", "--quiet"]


def test_an_output_that_is_an_input_is_refused_before_anything_is_read(capsys, files):
    d, before = files
    os.symlink(d / "d.csv", d / "sym.csv")
    os.link(d / "m.npz", d / "hard.npz")
    os.symlink(d / "pq", d / "pqlink")
    cases = [
        (["train", d / "d.csv", "--target", "label", *TRAIN, "--out", d / "d.csv"],
         [f"--out {d / 'd.csv'} is also DATA: writing it would destroy the training data"]),
        (["train", d / "d.csv", "--target", "label", *TRAIN, "--out", d / "sym.csv"],
         [f"--out {d / 'sym.csv'} is DATA {d / 'd.csv'} under another name (a link)"]),
        (["train", d / "pq", "--target", "label", *TRAIN, "--out", d / "pq" / "model.npz"],
         [f"--out {d / 'pq' / 'model.npz'} is inside DATA {d / 'pq'}, a directory whose every file is read"]),
        (["train", d / "pq", "--target", "label", *TRAIN, "--out", d / "pqlink" / "0.parquet"],
         [f"is inside DATA {d / 'pq'}"]),  # through a symlinked directory: the data set's own file
        (["train", d / "d.csv", "--target", "label", *TRAIN, "--plot", d / "d.csv"], ["--plot", "is also DATA"]),
        (["train", d / "d.csv", "--target", "label", *TRAIN, "--out", d / "n.npz", "--plot", d / "n.npz"],
         [f"--plot {d / 'n.npz'} is also --out"]),
        (["train", d / "d.csv", "--target", "label", *TRAIN, "--resume", d / "m.npz", "--plot", d / "hard.npz"],
         ["--plot", "is --resume", "under another name"]),
        (["predict", d / "m.npz", d / "d.csv", "--out", d / "m.npz"], ["--out", "is also MODEL", "destroy the model"]),
        (["predict", d / "m.npz", d / "d.csv", "--out", d / "hard.npz"], ["is MODEL", "under another name"]),
        (["predict", d / "m.npz", d / "d.csv", "--out", d / "d.csv"], ["--out", "is also DATA", "destroy the data"]),
        (["export", d / "m.npz", d / "m.npz"], ["the output", "is also MODEL"]),
    ]
    for args, fragments in cases:
        _refused(run(capsys, *args), *fragments)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(os.listdir(d)) == ["d.csv", "hard.npz", "m.npz", "pq", "pqlink", "sym.csv"]
    assert os.listdir(d / "pq") == ["0.parquet"]


def test_out_may_continue_the_resumed_model_in_place(capsys, files):
    d, _ = files
    code, out, err = run(capsys, "train", d / "d.csv", "--target", "label", "--resume", d / "m.npz", "--epochs", 2,
                         "--backend", "cpu", "--quiet", "--out", d / "m.npz")
    assert code == 0, err
    assert bp_gpu.load(d / "m.npz").n_iter_ == 2


def test_missing_files_and_unwritable_outputs_have_one_wording(capsys, files):
    d, _ = files
    nowhere = d / "no" / "x"
    cases = [
        (["predict", d / "nosuch.npz", d / "d.csv"], f"{d / 'nosuch.npz'}: no such file or directory"),
        (["predict", d / "m.npz", d / "nosuch.csv"], f"{d / 'nosuch.csv'}: no such file or directory"),
        (["export", d / "nosuch.npz", d / "m.onnx"], f"{d / 'nosuch.npz'}: no such file or directory"),
        (["train", d / "d.csv", "--target", "label", "--resume", d / "nosuch.npz", "--epochs", "2"],
         f"{d / 'nosuch.npz'}: no such file or directory"),
        (["predict", d, d / "d.csv"], f"{d}: is a directory"),
        (["export", d / "m.npz", nowhere], f"cannot write {nowhere}: the directory {nowhere.parent} does not exist"),
        (["predict", d / "m.npz", d / "d.csv", "--out", nowhere],
         f"cannot write {nowhere}: the directory {nowhere.parent} does not exist"),
        (["train", d / "d.csv", "--target", "label", "--out", nowhere],
         f"cannot write {nowhere}: the directory {nowhere.parent} does not exist"),
    ]
    for args, message in cases:
        code, out, err = run(capsys, *args)
        assert code == 1 and out == "" and "Errno" not in err, (args, err)
        assert err.strip().splitlines() == [f"bp-gpu {args[0]}: error: {message}"]


def test_overlap_tells_the_same_file_from_one_inside_a_directory(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.parquet").write_bytes(b"x")
    os.link(tmp_path / "data" / "a.parquet", tmp_path / "hard")
    (tmp_path / "other").write_bytes(b"y")
    assert overlap(tmp_path / "data" / "a.parquet", tmp_path / "data" / "a.parquet") == "same"
    assert overlap(tmp_path / "hard", tmp_path / "data" / "a.parquet") == "same"
    assert overlap(tmp_path / "data" / "new.npz", tmp_path / "data") == "inside"
    assert overlap(tmp_path / "hard", tmp_path / "data") == "link"
    assert overlap(tmp_path / "other", tmp_path / "data") is None
    assert overlap(tmp_path / "other", tmp_path / "data" / "a.parquet") is None
    assert overlap(tmp_path / "x.npz", tmp_path / "missing") is None
