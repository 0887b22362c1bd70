"""Parquet files and directories, and Arrow IPC/Feather files, through bp_gpu.data.open."""

import os

import numpy as np
import pytest

import bp_gpu.data as bd

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")


def _table(n, seed=0, labels=("no", "yes")):
    rng = np.random.default_rng(seed)
    return pa.table({
        "x0": rng.normal(size=n),
        "x1": rng.integers(-5, 5, n).astype(np.int32),
        "flag": rng.random(n) < 0.5,
        "label": pa.array(np.array(labels)[rng.integers(0, len(labels), n)]),
    })


def _expected(t):
    X = np.column_stack([t.column(c).to_numpy().astype(np.float64) for c in ("x0", "x1", "flag")])
    return X, t.column("label").to_numpy(zero_copy_only=False).astype(str)


def test_parquet_file_row_groups_are_the_chunks(tmp_path):
    t = _table(95)
    p = tmp_path / "d.parquet"
    pq.write_table(t, p, row_group_size=20)
    ds = bd.open(p, target="label")
    assert (ds.format, ds.feature_names, ds.n_rows, ds.n_chunks) == ("parquet", ["x0", "x1", "flag"], 95, 5)
    assert list(ds.chunk_rows()) == [20, 20, 20, 20, 15]
    X, y = ds.read_all()
    Xe, ye = _expected(t)
    np.testing.assert_array_equal(X, Xe)
    np.testing.assert_array_equal(y, ye)
    np.testing.assert_array_equal(ds.labels(), ["no", "yes"])
    c = next(ds.iter_chunks(order=[3], dtype=np.float32))
    assert c.start == 60 and c.X.dtype == np.float32 and c.X.flags.c_contiguous
    np.testing.assert_allclose(c.X, Xe[60:80], rtol=1e-7)
    np.testing.assert_allclose(ds.stats()[0], Xe.mean(0), rtol=1e-12)
    assert bd.open(p, target=3, features=["x1"]).read_all()[0].shape == (95, 1)


def test_label_pass_reads_the_target_column_alone(tmp_path, monkeypatch):
    p = tmp_path / "d.parquet"
    pq.write_table(_table(50), p, row_group_size=10)
    ds = bd.open(p, target="label")
    asked = []
    real = ds._src.read
    monkeypatch.setattr(ds._src, "read", lambda c, cols: asked.append(cols) or real(c, cols))
    ds.labels()
    assert asked == [["label"]] * 5


def test_parquet_directory_is_one_dataset_in_path_order(tmp_path):
    d = tmp_path / "ds"
    (d / "sub").mkdir(parents=True)
    parts = [_table(n, seed=s) for s, n in enumerate((30, 7, 12))]
    pq.write_table(parts[0], d / "part-0.parquet", row_group_size=16)
    pq.write_table(parts[1], d / "part-1.parquet")
    pq.write_table(parts[2], d / "sub" / "part-2.parquet", row_group_size=5)
    (d / "_SUCCESS").write_text("")
    (d / ".hidden").write_text("junk")
    ds = bd.open(d, target="label")
    assert ds.n_rows == 49 and list(ds.chunk_rows()) == [16, 14, 7, 5, 5, 2]
    X, y = ds.read_all()
    Xe, ye = _expected(pa.concat_tables(parts))
    np.testing.assert_array_equal(X, Xe)
    np.testing.assert_array_equal(y, ye)
    shards = [ds.shard(r, 4) for r in range(4)]
    assert [s.n_chunks for s in shards] == [1, 2, 1, 2]
    np.testing.assert_array_equal(np.concatenate([s.read_all()[1] for s in shards]), ye)
    assert ds.shard(0, 8).n_rows == 0  # fewer chunks than ranks: some ranks get nothing


def test_bad_values_name_file_global_row_row_group_and_column(tmp_path):
    t = _table(40)
    x0 = t.column("x0").to_numpy().copy()
    x0[27] = np.nan
    pq.write_table(t.set_column(0, "x0", pa.array(x0)), tmp_path / "nan.parquet", row_group_size=10)
    with pytest.raises(bd.DataError, match=r"nan\.parquet: row 27 \(row group 2\), column 'x0': NaN; features must be"):
        bd.open(tmp_path / "nan.parquet", target="label").read_all()
    x1 = pa.array([None if i == 33 else 1 for i in range(40)], pa.int32())
    pq.write_table(t.set_column(1, "x1", x1), tmp_path / "null.parquet", row_group_size=10)
    with pytest.raises(bd.DataError, match=r"row 33 \(row group 3\), column 'x1': the value is missing"):
        bd.open(tmp_path / "null.parquet", target="label").read_all()
    lab = pa.array([None if i == 5 else "a" for i in range(40)])
    pq.write_table(t.set_column(3, "label", lab), tmp_path / "nolab.parquet", row_group_size=10)
    with pytest.raises(bd.DataError, match=r"row 5 \(row group 0\), column 'label': the label is missing"):
        bd.open(tmp_path / "nolab.parquet", target="label").labels()
    flab = pa.array([np.nan if i == 12 else 1.0 for i in range(40)])
    pq.write_table(t.set_column(3, "label", flab), tmp_path / "nanlab.parquet", row_group_size=10)
    with pytest.raises(bd.DataError, match=r"row 12 \(row group 1\), column 'label': the label is missing"):
        bd.open(tmp_path / "nanlab.parquet", target="label").read_all()


def test_directory_errors_give_the_global_row_and_the_file(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    pq.write_table(_table(30), d / "a.parquet")
    t = _table(20, seed=1)
    x0 = t.column("x0").to_numpy().copy()
    x0[4] = np.inf
    pq.write_table(t.set_column(0, "x0", pa.array(x0)), d / "b.parquet", row_group_size=8)
    with pytest.raises(bd.DataError, match=r"b\.parquet: row 34 of the data set \(row 4 of this file, row group 0\), "
                                           r"column 'x0': inf"):
        bd.open(d, target="label").read_all()


def test_schema_problems_are_refused_when_opened(tmp_path):
    t = _table(10)
    pq.write_table(t.set_column(1, "x1", pa.array(["a"] * 10)), tmp_path / "s.parquet")
    with pytest.raises(bd.DataError, match=r"s\.parquet: column 'x1' has type string; feature columns must be numeric"):
        bd.open(tmp_path / "s.parquet", target="label")
    with pytest.raises(bd.DataError, match=r"no column named 'target' for the target \(columns: \['x0', 'x1', "):
        bd.open(tmp_path / "s.parquet", target="target")
    d = tmp_path / "mixed"
    d.mkdir()
    pq.write_table(t, d / "a.parquet")
    pq.write_table(t.set_column(1, "x1", t.column("x1").cast(pa.float64())), d / "b.parquet")
    with pytest.raises(bd.DataError, match=r"b\.parquet: its schema differs from that of .*a\.parquet: column 'x1' is "
                                           r"double here but int32 in the first file"):
        bd.open(d, target="label")
    pq.write_table(t.drop_columns(["flag"]), d / "b.parquet")
    with pytest.raises(bd.DataError, match="it has no column 'flag'"):
        bd.open(d, target="label")
    (tmp_path / "empty").mkdir()
    with pytest.raises(bd.DataError, match="a directory is read as a Parquet data set, but it holds no data files"):
        bd.open(tmp_path / "empty")
    (tmp_path / "csvs").mkdir()
    (tmp_path / "csvs" / "a.csv").write_text("x,label\n1,2\n")
    with pytest.raises(bd.DataError, match=r"csvs: a directory is read as a Parquet data set, but .*a\.csv in it is "
                                           "not a readable Parquet file"):
        bd.open(tmp_path / "csvs")


def test_truncated_and_corrupt_parquet(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(_table(200), p, row_group_size=50, compression="snappy")
    data = p.read_bytes()
    (tmp_path / "trunc.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(bd.DataError, match=r"trunc\.parquet: not a readable Parquet file, truncated or corrupt"):
        bd.open(tmp_path / "trunc.parquet", target="label")
    # Garble the middle of the column data, keeping the footer: found when that row group is read.
    ds = bd.open(p, target="label")
    meta = ds._src.metas[0].row_group(2).column(0)
    start = meta.data_page_offset
    bad = bytearray(data)
    bad[start:start + meta.total_compressed_size] = b"\xff" * meta.total_compressed_size
    (tmp_path / "bad.parquet").write_bytes(bytes(bad))
    ds = bd.open(tmp_path / "bad.parquet", target="label")
    with pytest.raises(bd.DataError, match=r"bad\.parquet: row group 2 \(rows 100-149\) cannot be read"):
        ds.read_all()


def test_batches_from_parquet_match_the_same_chunks_in_memory(tmp_path):
    t = _table(103)
    p = tmp_path / "d.parquet"
    pq.write_table(t, p, row_group_size=10)
    Xe, ye = _expected(t)
    got = list(bd.open(p, target="label").batches(8, rng=np.random.default_rng(1), shuffle_buffer=3))
    want = list(bd.from_arrays(Xe, ye, chunk_rows=10).batches(8, rng=np.random.default_rng(1), shuffle_buffer=3))
    assert len(got) == len(want) == 13
    for (a, b), (c, d) in zip(got, want):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


# -- Arrow IPC / Feather ------------------------------------------------------------------------
def test_arrow_file_record_batches_are_the_chunks(tmp_path):
    t = _table(77, labels=("0", "1", "2"))
    t = t.set_column(3, "label", t.column("label").cast(pa.int64()))
    p = tmp_path / "d.arrow"
    with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
        for b in t.to_batches(max_chunksize=20):
            w.write_batch(b)
    ds = bd.open(p, target="label")
    assert (ds.format, ds.n_rows, list(ds.chunk_rows())) == ("arrow", 77, [20, 20, 20, 17])
    X, y = ds.read_all()
    np.testing.assert_array_equal(X, _expected(t)[0])
    assert y.dtype == np.int64
    np.testing.assert_array_equal(ds.labels(), [0, 1, 2])
    assert [c.start for c in ds.shard(1, 2).iter_chunks()] == [40, 60]
    ds.close()


def test_feather_v2_and_refused_formats(tmp_path):
    t = _table(30)
    feather.write_feather(t, tmp_path / "d.feather", chunksize=8, compression="zstd")
    ds = bd.open(tmp_path / "d.feather", target="label")
    assert list(ds.chunk_rows()) == [8, 8, 8, 6]
    np.testing.assert_array_equal(ds.read_all()[1], _expected(t)[1])
    x0 = t.column("x0").to_numpy().copy()
    x0[19] = np.nan
    feather.write_feather(t.set_column(0, "x0", pa.array(x0)), tmp_path / "n.feather", chunksize=8)
    with pytest.raises(bd.DataError, match=r"n\.feather: row 19 \(record batch 2\), column 'x0': NaN"):
        bd.open(tmp_path / "n.feather", target="label").read_all()
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    with pytest.raises(bd.DataError, match="streaming format is not supported"):
        bd.open(tmp_path / "s.arrow")
    (tmp_path / "v1.feather").write_bytes(b"FEA1" + b"\0" * 64)
    with pytest.raises(bd.DataError, match="Feather version 1"):
        bd.open(tmp_path / "v1.feather")
    data = (tmp_path / "d.feather").read_bytes()
    (tmp_path / "t.feather").write_bytes(data[: len(data) - 30])
    with pytest.raises(bd.DataError, match="truncated or corrupt"):
        bd.open(tmp_path / "t.feather")


def test_same_data_in_every_format_reads_the_same(tmp_path):
    t = _table(64, labels=("3", "5"))
    t = t.set_column(3, "label", t.column("label").cast(pa.int64()))
    Xe, _ = _expected(t.set_column(3, "label", t.column("label").cast(pa.string())))
    ye = t.column("label").to_numpy()
    pq.write_table(t, tmp_path / "d.parquet", row_group_size=9)
    feather.write_feather(t, tmp_path / "d.feather", chunksize=11)
    np.save(tmp_path / "d.npy", np.column_stack([Xe, ye]))
    np.savez(tmp_path / "d.npz", X=Xe, y=ye)
    with open(tmp_path / "d.csv", "w") as f:
        f.write("x0,x1,flag,label\n")
        for row, lab in zip(Xe, ye):
            f.write(",".join(repr(float(v)) for v in row) + f",{lab}\n")
    for name, target in (("d.parquet", "label"), ("d.feather", "label"), ("d.npy", 3), ("d.npz", "y"),
                         ("d.csv", "label")):
        ds = bd.open(tmp_path / name, target=target)
        X, y = ds.read_all()
        np.testing.assert_array_equal(X, Xe, err_msg=name)
        np.testing.assert_array_equal(y, ye, err_msg=name)
        np.testing.assert_array_equal(ds.labels(), [3, 5], err_msg=name)
        np.testing.assert_allclose(ds.stats()[1], Xe.std(0), rtol=1e-12, err_msg=name)


def _rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
def test_a_pass_over_an_arrow_file_does_not_keep_it_resident(tmp_path):
    n = 1_500_000
    t = pa.table({"a": np.ones(n), "b": np.ones(n), "c": np.ones(n), "y": np.zeros(n, np.int64)})  # 48 MB
    feather.write_feather(t, tmp_path / "big.arrow", chunksize=100_000, compression="uncompressed")
    del t
    ds = bd.open(tmp_path / "big.arrow", target="y")
    before = _rss_mb()
    ds.labels()
    for _ in ds.iter_chunks():
        pass
    assert _rss_mb() - before < 16
    ds.close()


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_a_column_missing_throughout_is_refused_when_opened(tmp_path, fmt):
    # NaN through pandas becomes null: an all-NaN column is a column of nulls in the file.
    n = 50
    t = pa.table({"a": np.arange(n, dtype=float), "empty": pa.nulls(n, pa.float64()),
                  "label": pa.array(["x", "y"] * (n // 2))})
    path = tmp_path / f"d.{fmt}"
    pq.write_table(t, path, row_group_size=10) if fmt == "parquet" else feather.write_feather(t, path, chunksize=10)
    with pytest.raises(bd.DataError) as e:
        bd.open(path, target="label")
    assert str(e.value) == (f"{path}: column 'empty' is entirely missing (all {n} values are null); features must be "
                            "numbers; leave it out with features= (--features)")
    assert bd.open(path, target="label", features=["a"]).n_rows == n  # left out, the rest reads
    t = t.set_column(2, "label", pa.nulls(n, pa.string()))
    pq.write_table(t, path, row_group_size=10) if fmt == "parquet" else feather.write_feather(t, path, chunksize=10)
    with pytest.raises(bd.DataError, match="column 'label' is entirely missing .*; every row needs a label"):
        bd.open(path, target="label", features=["a"])
    # pandas writes a column of None only as type null: refused at open in the same words.
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": pa.nulls(2), "label": ["x", "y"]}), tmp_path / "n.parquet")
    with pytest.raises(bd.DataError, match="column 'b' is entirely missing \\(type null: it holds no value\\)"):
        bd.open(tmp_path / "n.parquet", target="label")
    # A column with some values is reported where its first missing value is, when read.
    t = pa.table({"a": pa.array([1.0] * (n - 1) + [None]), "label": pa.array(["x", "y"] * (n // 2))})
    pq.write_table(t, path, row_group_size=10) if fmt == "parquet" else feather.write_feather(t, path, chunksize=10)
    with pytest.raises(bd.DataError, match="row 49 .*column 'a': the value is missing"):
        bd.open(path, target="label").read_all()
