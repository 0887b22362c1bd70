""".npy (memory-mapped, target a column) and .npz (named arrays) through bp_gpu.data.open."""

import os

import numpy as np
import pytest

import bp_gpu.data as bd


@pytest.fixture
def table(rng):
    A = rng.normal(size=(57, 5))
    A[:, 3] = rng.integers(0, 3, 57)  # the label column
    return A


def test_npy_is_memory_mapped_and_reads_row_ranges(tmp_path, table):
    p = tmp_path / "d.npy"
    np.save(p, table)
    ds = bd.open(p, target=3, chunk_rows=10)
    assert isinstance(ds._source, np.memmap)
    assert (ds.format, ds.feature_names, ds.target, ds.n_rows, ds.n_chunks) == ("npy", ["0", "1", "2", "4"], "3", 57, 6)
    X, y = ds.read_all()
    np.testing.assert_array_equal(X, table[:, [0, 1, 2, 4]])
    np.testing.assert_array_equal(y, table[:, 3])
    np.testing.assert_array_equal(ds.labels(), [0.0, 1.0, 2.0])
    # the target may also be a negative index or a string of one; features a subset
    ds2 = bd.open(str(p), target="-2", features=[4, "0"])
    np.testing.assert_array_equal(ds2.read_all()[0], table[:, [4, 0]])
    assert bd.open(p).target is None and bd.open(p).n_features == 5


def test_npy_shards_are_row_ranges(tmp_path, table):
    p = tmp_path / "d.npy"
    np.save(p, table)
    ds = bd.open(p, target=3, chunk_rows=4)
    parts = [ds.shard(r, 4) for r in range(4)]
    assert [s.n_rows for s in parts] == [14, 14, 14, 15]
    np.testing.assert_array_equal(np.concatenate([s.read_all()[1] for s in parts]), table[:, 3])
    assert [c.start for c in parts[1].iter_chunks()] == [14, 18, 22, 26]


def test_npy_errors_name_file_row_and_column(tmp_path, table):
    p = tmp_path / "d.npy"
    table[41, 2] = np.inf
    np.save(p, table)
    with pytest.raises(bd.DataError, match=r"d\.npy: row 41, column 2: inf; features must be finite numbers"):
        bd.open(p, target=3, chunk_rows=10).read_all()
    table[41, 2] = 0
    table[9, 3] = np.nan
    np.save(p, table)
    with pytest.raises(bd.DataError, match=r"d\.npy: row 9, column 3: the label is missing"):
        bd.open(p, target=3).labels()
    np.save(p, np.array([{"a": 1}], dtype=object))
    with pytest.raises(bd.DataError, match=r"d\.npy: not a readable \.npy array"):
        bd.open(p)
    np.save(p, np.ones(3))
    with pytest.raises(bd.DataError, match="2-D numeric"):
        bd.open(p)
    (tmp_path / "t.npy").write_bytes(open(p, "rb").read()[:-8])  # truncated
    with pytest.raises(bd.DataError, match="not a readable"):
        bd.open(tmp_path / "t.npy")
    with pytest.raises(FileNotFoundError, match="no such file"):
        bd.open(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="applies to CSV files only"):
        bd.open(p, header=False)


def test_npz_reads_named_arrays(tmp_path, rng):
    X = rng.normal(size=(30, 4)).astype(np.float32)
    y = np.array(["cat", "dog", "eel"])[rng.integers(0, 3, 30)]
    p = tmp_path / "d.npz"
    np.savez(p, X=X, labels=y, other=np.ones((30, 2)))
    ds = bd.open(p, target="labels", chunk_rows=7)
    assert (ds.format, ds.n_rows, ds.n_chunks, ds.target) == ("npz", 30, 5, "labels")
    Xr, yr = ds.read_all(np.float32)
    np.testing.assert_array_equal(Xr, X)
    np.testing.assert_array_equal(yr, y)
    np.testing.assert_array_equal(ds.labels(), ["cat", "dog", "eel"])
    assert bd.open(p, features="other").n_features == 2


def test_npz_errors(tmp_path):
    p = tmp_path / "d.npz"
    X = np.ones((5, 2))
    X[3, 1] = np.nan
    np.savez(p, X=X, y=np.arange(5))
    with pytest.raises(bd.DataError, match=r"d\.npz: X\[3, 1\]: NaN"):
        bd.open(p, target="y").read_all()
    with pytest.raises(bd.DataError, match=r"no array named 'label' for the target \(arrays: \['X', 'y'\]\)"):
        bd.open(p, target="label")
    with pytest.raises(bd.DataError, match=r"no array named 'features' for the features"):
        bd.open(p, features="features")
    np.savez(p, X=np.ones((5, 2)), y=np.arange(4))
    with pytest.raises(bd.DataError, match=r"'y' must have shape \(n,\) or \(n, K\) with n = 5"):
        bd.open(p, target="y")
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(bd.DataError, match=r"d\.npz: not a readable \.npz archive"):
        bd.open(p, target="y")


def test_format_detection_by_magic_number(tmp_path, table):
    p = tmp_path / "noext"
    with open(p, "wb") as f:
        np.save(f, table)
    assert bd.open(p, target=3).format == "npy"
    q = tmp_path / "data.bin"
    q.write_text("a,b\n1,2\n")
    assert bd.open(q, target="b").format == "csv"


def _rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
def test_a_pass_over_a_memory_mapped_npy_does_not_keep_it_resident(tmp_path):
    p = tmp_path / "big.npy"
    np.save(p, np.ones((750_000, 8)))  # 48 MB
    ds = bd.open(p, target=0)
    before = _rss_mb()
    ds.labels()
    for _ in ds.iter_chunks():
        pass
    assert _rss_mb() - before < 16  # the mapped pages were released chunk by chunk


def test_garbage_files_are_named_for_what_they_are_not(tmp_path):
    """np.load takes a file without the NumPy magic for a pickle ("pickled (object) data"): the
    readers check the magic first and say what the file is not."""
    (tmp_path / "g.npy").write_text("not numbers at all\n")
    with pytest.raises(bd.DataError, match=r"g\.npy: not a \.npy file: it is not in the \.npy format"):
        bd.open(tmp_path / "g.npy")
    np.savez(tmp_path / "z.npz", X=np.ones((2, 2)))
    (tmp_path / "z.npz").rename(tmp_path / "z.npy")
    with pytest.raises(bd.DataError, match=r"z\.npy: not a \.npy file: it is a zip archive \(a \.npz\?"):
        bd.open(tmp_path / "z.npy")
    (tmp_path / "g.npz").write_text("not a zip\n")
    with pytest.raises(bd.DataError, match=r"g\.npz: not a \.npz file: it is not a zip archive"):
        bd.open(tmp_path / "g.npz")
    np.save(tmp_path / "a.npy", np.ones((2, 2)))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(bd.DataError, match=r"a\.npz: not a \.npz file: it is a single \.npy array"):
        bd.open(tmp_path / "a.npz")
