"""`bp-gpu train`, `predict` and `export` on the data formats of bp_gpu.data (run in-process through
``bp_gpu.cli.main``: the subprocess tests in test_cli.py cover the command as a user runs it)."""

import argparse
import csv
import os

import numpy as np
import pytest

import bp_gpu
import bp_gpu.data as bd
from bp_gpu.cli import CLIError, main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _raw(rng, n=400):
    X = rng.normal(size=(n, 3)) * [1.0, 40.0, 0.05] + [0.0, 300.0, 2.0]
    y = np.where(X[:, 0] + (X[:, 1] - 300) / 40 > 0, "yes", "no")
    return X, y


def _write_parquet(path, X, y, row_group=100):
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "label": y, "c": X[:, 2]}), path, row_group_size=row_group)


TRAIN = ["--hidden", "6", "--epochs", "8", "--batch-size", "32", "--learning-rate", "0.02", "--backend", "cpu",
         "--quiet"]


@pytest.fixture(scope="module")
def parquet_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("pq")
    X, y = _raw(np.random.default_rng(0))
    _write_parquet(d / "d.parquet", X, y)
    assert main(["train", str(d / "d.parquet"), "--target", "label", *TRAIN, "--standardize", "--out",
                 str(d / "m.npz")]) == 0
    return d, X, y


@pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")
def test_train_from_parquet_predict_to_parquet_and_csv_and_export(capsys, parquet_model, tmp_path):
    d, X, y = parquet_model
    clf = bp_gpu.load(d / "m.npz")
    assert clf.feature_mean_ is not None and list(clf.classes_) == ["no", "yes"]
    code, _, err = run(capsys, "predict", d / "m.npz", d / "d.parquet", "--target", "label", "--proba", "--out",
                       tmp_path / "p.parquet")
    assert code == 0 and err.startswith("accuracy ") and float(err.split()[1]) > 0.9
    t = pq.read_table(tmp_path / "p.parquet")
    assert t.column_names == ["prediction", "proba_no", "proba_yes"] and t.num_rows == len(X)
    assert t.schema.field("proba_yes").type == pa.float32()
    np.testing.assert_array_equal(t.column("prediction").to_numpy(zero_copy_only=False), clf.predict(X))
    np.testing.assert_allclose(t.column("proba_yes").to_numpy(), clf.predict_proba(X)[:, 1], rtol=1e-6)

    code, out, _ = run(capsys, "predict", d / "m.npz", d / "d.parquet", "--target", "label", "--proba")
    rows = list(csv.reader(out.splitlines()))
    P = clf.predict_proba(X).astype(np.float32)
    assert rows[0] == ["prediction", "proba_no", "proba_yes"] and len(rows) == len(X) + 1
    # float32 values printed with float32 digits (0.459117), not float64 expansions (0.45911699533462524)
    assert rows[1][1:] == [str(P[0, 0]), str(P[0, 1])] and all(len(v) <= 14 for v in rows[1][1:])

    code, out, _ = run(capsys, "export", d / "m.npz", tmp_path / "m.onnx")
    assert code == 0 and "standardised in the graph" in out
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    label, proba = sess.run(["label", "probabilities"], {"X": X.astype(np.float32)})
    np.testing.assert_array_equal(label, clf.predict(X))
    np.testing.assert_allclose(proba, clf.predict_proba(X.astype(np.float32)), atol=1e-5)


def test_csv_options_header_delimiter_encoding(capsys, tmp_path, rng):
    X, y = _raw(rng, 120)
    lines = ["température;b;étiquette"] + [f"{a};{b};{t}" for (a, b, _), t in zip(X, y)]
    (tmp_path / "l1.csv").write_bytes("\n".join(lines).encode("latin-1"))
    code, _, err = run(capsys, "train", tmp_path / "l1.csv", "--target", "étiquette", "--delimiter", ";",
                       "--encoding", "latin-1", *TRAIN, "--out", tmp_path / "m.npz")
    assert code == 0, err
    (tmp_path / "nh.csv").write_text("\n".join(f"{a}\t{b}\t{t}" for (a, b, _), t in zip(X, y)))
    code, _, err = run(capsys, "train", tmp_path / "nh.csv", "--target", "2", "--no-header", "--delimiter", "\\t",
                       *TRAIN, "--out", tmp_path / "n.npz")
    assert code == 0, err
    code, _, err = run(capsys, "train", tmp_path / "nh.csv", "--target", "2", "--delimiter", "tab", *TRAIN)
    assert code == 1 and "is read as the header, but" in err and "--no-header" in err
    code, out, err = run(capsys, "predict", tmp_path / "n.npz", tmp_path / "nh.csv", "--no-header", "--delimiter",
                         "\\t", "--target", "2")
    assert code == 0 and float(err.split()[1]) > 0.5 and out.splitlines()[0] == "prediction"


def test_npy_and_npz_are_streamed_too(capsys, tmp_path, rng):
    X, y = _raw(rng, 150)
    t = (y == "yes").astype(float)
    np.save(tmp_path / "d.npy", np.column_stack([X, t]))
    np.savez(tmp_path / "d.npz", features=X, y=t)
    assert run(capsys, "train", tmp_path / "d.npy", "--target", "-1", *TRAIN, "--out", tmp_path / "a.npz")[0] == 0
    assert run(capsys, "train", tmp_path / "d.npz", "--target", "y", "--features", "features", *TRAIN, "--out",
               tmp_path / "b.npz")[0] == 0
    a, b = bp_gpu.load(tmp_path / "a.npz"), bp_gpu.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.net_.get_weights()[0][0], b.net_.get_weights()[0][0])  # same rows, same seed
    code, out, _ = run(capsys, "predict", tmp_path / "b.npz", tmp_path / "d.npz", "--features", "features")
    assert code == 0 and [float(v) for v in out.splitlines()[1:]] == list(b.predict(X))


def test_predict_checks_the_target_before_writing_anything(capsys, parquet_model, tmp_path, rng):
    d, X, _ = parquet_model
    _write_parquet(tmp_path / "numbers.parquet", X, np.zeros(len(X), dtype=np.int64))
    (tmp_path / "keep.csv").write_text("old\n")
    code, out, err = run(capsys, "predict", d / "m.npz", tmp_path / "numbers.parquet", "--target", "label", "--out",
                         tmp_path / "keep.csv")
    assert code == 1 and "are numbers" in err and "model's classes are text" in err
    assert (tmp_path / "keep.csv").read_text() == "old\n"
    code, out, err = run(capsys, "predict", d / "m.npz", tmp_path / "numbers.parquet", "--target", "label")
    assert code == 1 and out == ""  # not even the header line
    y = np.where(X[:, 0] > 0, "yes", "maybe")
    _write_parquet(tmp_path / "unknown.parquet", X, y)
    code, out, err = run(capsys, "predict", d / "m.npz", tmp_path / "unknown.parquet", "--target", "label")
    assert code == 0 and "labels the model never saw count as errors: ['maybe']" in err
    assert sorted(os.listdir(tmp_path)) == ["keep.csv", "numbers.parquet", "unknown.parquet"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_failure_while_predicting_leaves_no_output_and_no_temporary(capsys, parquet_model, tmp_path, suffix):
    d, X, y = parquet_model
    X = X.copy()
    X[350, 2] = np.nan  # in the last row group: the earlier ones have been written when it is read
    _write_parquet(tmp_path / "bad.parquet", X, y)
    code, _, err = run(capsys, "predict", d / "m.npz", tmp_path / "bad.parquet", "--target", "label", "--out",
                       tmp_path / f"out{suffix}")
    assert code == 1 and "bad.parquet: row 350 (row group 3), column 'c': NaN" in err
    assert os.listdir(tmp_path) == ["bad.parquet"]
    code, _, err = run(capsys, "predict", d / "m.npz", d / "d.parquet", "--target", "label", "--out",
                       tmp_path / "no" / "out.csv")
    assert code == 1 and f"cannot write {tmp_path / 'no' / 'out.csv'}" in err and ".tmp" not in err


def test_data_errors_are_one_line_and_say_what_is_wrong(capsys, parquet_model, tmp_path):
    d, X, y = parquet_model
    # A model without feature names (fitted on an array) takes every column of the file but --target.
    bp_gpu.MLPClassifier((3,), epochs=1, backend="cpu", random_state=0).fit(X, y).save(tmp_path / "nameless.npz")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "x.csv").write_text("a,b\n1,2\n")
    (tmp_path / "g.npy").write_text("garbage")
    (tmp_path / "nan.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,NaN,x\n")
    (tmp_path / "inf.csv").write_text("a,b,label\n1,2,x\n3,inf,y\n")
    cases = [
        (["train", tmp_path / "adir", "--target", "b"], "a directory is read as a Parquet data set, but"),
        (["train", tmp_path / "g.npy", "--target", "0"], "g.npy: not a .npy file"),
        (["train", tmp_path / "nan.csv", "--target", "label"], "nan.csv: line 4, column 'b': the value is missing"),
        (["train", tmp_path / "inf.csv", "--target", "label"], "inf.csv: line 3, column 'b': inf; features must be"),
        (["train", d / "d.parquet", "--target", "label", "--header"], "--header applies to CSV files only"),
        (["train", tmp_path / "nope.csv", "--target", "label"], "nope.csv: no such file or directory"),
        (["predict", tmp_path / "nameless.npz", d / "d.parquet"], "feature columns must be numeric; if it is the "
                                                                  "label, name it with --target"),
    ]
    for args, fragment in cases:
        code, _, err = run(capsys, *args)
        assert code == 1 and len(err.strip().splitlines()) == 1 and fragment in err, (args, err)
    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path / "nan.csv"), "--target", "label", "--delimiter", ";;"])
    assert e.value.code == 2 and "expected one character" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")
def test_the_models_feature_names_pick_and_order_the_columns(parquet_model, tmp_path):
    from bp_gpu.cli._dataset import open_data

    d, X, y = parquet_model
    clf = bp_gpu.MLPClassifier((4,), epochs=1, backend="cpu", random_state=0)
    clf.fit(bd.open(d / "d.parquet", target="label"))
    assert list(clf.feature_names_in_) == ["a", "b", "c"]
    pq.write_table(pa.table({"id": np.arange(len(X)), "c": X[:, 2], "label": y, "a": X[:, 0], "b": X[:, 1]}),
                   tmp_path / "other.parquet")
    args = argparse.Namespace(data=str(tmp_path / "other.parquet"), features=None, header=None, delimiter=None,
                              encoding=None)
    ds = open_data(args, "label", clf)
    assert ds.feature_names == ["a", "b", "c"]
    np.testing.assert_array_equal(clf.predict_proba(ds), clf.predict_proba(X))
    pq.write_table(pa.table({"c": X[:, 2], "label": y, "a": X[:, 0]}), tmp_path / "missing.parquet")
    args.data = str(tmp_path / "missing.parquet")
    with pytest.raises(CLIError, match="missing.parquet has no column 'b', which the model was trained on"):
        open_data(args, "label", clf)
