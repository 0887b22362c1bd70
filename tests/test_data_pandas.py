"""Files as pandas writes them by default: the index is no feature, and a model trained on such a
file predicts on the same file, on one saved without the index, and on its Parquet twin."""

import numpy as np
import pytest

import bp_gpu
import bp_gpu.data as bd
from bp_gpu.cli import main

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def frame():
    """Sorted by class, with a non-range index: the index alone would give the label away."""
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n), "label": np.where(rng.random(n) < 0.5,
                                                                                              "no", "yes")})
    df = df.sort_values("label", kind="stable")
    df.index = rng.permutation(1000)[:n]
    return df


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_csv_index_column_is_no_feature_and_is_said_to_be_ignored(tmp_path, frame):
    frame.to_csv(tmp_path / "d.csv")  # pandas' default: the index first, under an empty name
    ds = bd.open(tmp_path / "d.csv", target="label")
    assert ds.feature_names == ["x", "z"] and list(ds.ignored_columns) == ["column 0 (unnamed: a pandas index)"]
    X, y = ds.read_all()
    np.testing.assert_allclose(X, frame[["x", "z"]].to_numpy())
    # Asked for by index, it is a feature again; without a header nothing is a pandas index.
    assert bd.open(tmp_path / "d.csv", target="label", features=["0", "x"]).feature_names == ["", "x"]
    frame.to_csv(tmp_path / "h.csv", header=False)
    assert bd.open(tmp_path / "h.csv", target="3", header=False).feature_names == ["0", "1", "2"]
    assert list(bd.open(tmp_path / "h.csv", target="3", header=False).ignored_columns) == []
    # The index as the target (column 0 named explicitly) is not dropped from anything.
    assert bd.open(tmp_path / "d.csv", target="0").feature_names == ["x", "z", "label"]


@pytest.mark.parametrize("fmt", ["parquet", "feather"])
def test_parquet_and_arrow_leave_out_the_columns_pandas_marks_as_the_index(tmp_path, frame, fmt):
    import pyarrow.feather as feather

    path = tmp_path / f"d.{fmt}"
    # pandas' defaults: a non-range index is stored as a column and named in the schema's metadata
    # (DataFrame.to_feather refuses such an index, so the Arrow file is pyarrow's conversion of it).
    frame.to_parquet(path) if fmt == "parquet" else feather.write_feather(frame, path)
    ds = bd.open(path, target="label")
    assert ds.feature_names == ["x", "z"], ds.feature_names
    assert list(ds.ignored_columns) == ["column '__index_level_0__' (a pandas index)"]
    # A named index is an index too (what pyarrow.Table.to_pandas makes the index again).
    frame.rename_axis("row").to_parquet(tmp_path / "named.parquet")
    assert bd.open(tmp_path / "named.parquet", target="label").feature_names == ["x", "z"]
    # Asked for by name, the index column is a feature.
    assert bd.open(path, target="label", features=["x", "__index_level_0__"]).feature_names == ["x",
                                                                                              "__index_level_0__"]


def test_a_model_of_a_pandas_csv_predicts_on_the_file_without_its_index(capsys, tmp_path, frame):
    frame.to_csv(tmp_path / "train.csv")
    frame.to_csv(tmp_path / "plain.csv", index=False)
    frame.to_parquet(tmp_path / "train.parquet")
    code, out, err = run(capsys, "train", tmp_path / "train.csv", "--target", "label", "--epochs", 2, "--backend",
                         "cpu", "--quiet", "--out", tmp_path / "m.npz")
    assert code == 0, err
    assert "2 features of" in out and ", ignoring column 0 (unnamed: a pandas index): " in out, out
    clf = bp_gpu.load(tmp_path / "m.npz")
    assert list(clf.feature_names_in_) == ["x", "z"]
    expect = clf.predict(frame[["x", "z"]])
    for data in ("plain.csv", "train.csv", "train.parquet"):
        code, out, err = run(capsys, "predict", tmp_path / "m.npz", tmp_path / data)
        assert code == 0, (data, err)
        assert out.splitlines()[1:] == list(expect), data


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_predict_takes_the_models_features_by_name_from_the_training_file(capsys, tmp_path, frame, fmt):
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    path = tmp_path / f"train.{fmt}"
    pq.write_table(table, path) if fmt == "parquet" else feather.write_feather(table, path)
    code, _, err = run(capsys, "train", path, "--target", "label", "--epochs", 2, "--backend", "cpu", "--quiet",
                       "--out", tmp_path / "m.npz")
    assert code == 0, err
    clf = bp_gpu.load(tmp_path / "m.npz")
    # The very file, label column (text) included: the features are picked by name, the rest ignored.
    code, out, err = run(capsys, "predict", tmp_path / "m.npz", path)
    assert code == 0, err
    assert out.splitlines()[1:] == list(clf.predict(frame[["x", "z"]]))
    # --target naming one of the model's features is refused, and said to be one.
    code, out, err = run(capsys, "predict", tmp_path / "m.npz", path, "--target", "x")
    assert code == 2 and out == ""
    assert err.strip() == ("bp-gpu predict: error: --target x is one of the model's features ['x', 'z']: it cannot "
                           "be the label column; name the file's label column, or leave --target out")
    code, out, err = run(capsys, "predict", tmp_path / "m.npz", path, "--target", "1")  # by index: 'z'
    assert code == 2 and "--target 1 is column 'z', one of the model's features" in err
