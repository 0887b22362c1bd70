"""CSV through pyarrow: the header rule, encodings and BOM, long fields, delimiters, missing
values, 1-based line numbers in every error, label types, chunks, shards and the first pass.
Each problem the old hand-written reader had (README of issue 10) has a test here."""

import numpy as np
import pytest

import bp_gpu.data as bd

pytest.importorskip("pyarrow")


def _write(tmp_path, data, name="d.csv"):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def _read(p, **kw):
    return bd.open(p, **kw).read_all()


# -- the header rule ------------------------------------------------------------------------------
def test_header_line_names_the_columns(tmp_path):
    p = _write(tmp_path, "age,height,label\n31,1.8,yes\n45,1.6,no\n")
    ds = bd.open(p, target="label")
    assert (ds.format, ds.feature_names, ds.target) == ("csv", ["age", "height"], "label")
    X, y = ds.read_all()
    np.testing.assert_array_equal(X, [[31, 1.8], [45, 1.6]])
    np.testing.assert_array_equal(y, ["yes", "no"])
    # columns left out of features are never converted: a text column does no harm there
    p = _write(tmp_path, "name,age,label\nann,31,yes\n", "n.csv")
    np.testing.assert_array_equal(_read(p, target="label", features=["age"])[0], [[31.0]])
    with pytest.raises(bd.DataError, match=r"line 2, column 'name': 'ann' is not a number"):
        _read(p, target="label")


def test_headerless_file_with_text_labels_is_refused_by_default_not_shortened(tmp_path):
    # The old reader took "5.1,3.5,setosa" as a header and lost the first row.
    p = _write(tmp_path, "5.1,3.5,setosa\n4.9,3.0,setosa\n6.2,2.9,virginica\n")
    with pytest.raises(bd.DataError, match=r"d\.csv: line 1 is read as the header, but '5\.1' there is a number: if "
                                           r"the file has no header row, pass header=False \(--no-header\)"):
        bd.open(p, target=2)
    X, y = _read(p, target=2, header=False)
    assert len(X) == 3 and list(y) == ["setosa", "setosa", "virginica"]
    assert bd.open(p, target="2", header=False).feature_names == ["0", "1"]


def test_header_true_takes_numeric_names(tmp_path):
    p = _write(tmp_path, "0,1,2\n1,2,0\n3,4,1\n")
    with pytest.raises(bd.DataError, match="is read as the header"):
        bd.open(p, target="2")
    ds = bd.open(p, target="2", header=True)
    assert ds.feature_names == ["0", "1"] and ds.n_rows == 2


def test_header_with_duplicate_names_is_refused(tmp_path):
    with pytest.raises(bd.DataError, match="names the column 'a' more than once"):
        bd.open(_write(tmp_path, "a,b,a\n1,2,3\n"))


# -- encodings ------------------------------------------------------------------------------------
def test_utf8_bom_is_skipped_for_header_and_headerless_files(tmp_path):
    p = _write(tmp_path, b"\xef\xbb\xbfx,label\n1.5,a\n")
    ds = bd.open(p, target="label")
    assert ds.feature_names == ["x"]  # not "\ufeffx"
    # a numeric file with a BOM keeps its first row and its first value
    p = _write(tmp_path, b"\xef\xbb\xbf1.5,0\n2.5,1\n", "n.csv")
    X, y = _read(p, target=1, header=False)
    np.testing.assert_array_equal(X[:, 0], [1.5, 2.5])
    np.testing.assert_array_equal(y, [0, 1])


def test_latin1_file_needs_its_encoding_named(tmp_path):
    p = _write(tmp_path, "x,label\n1,ok\n2,caf\xe9\n".encode("latin-1"))
    with pytest.raises(bd.DataError, match=r"d\.csv: line 3 is not valid utf-8 text .*pass the file's encoding with "
                                           r"encoding= \(--encoding\), e\.g\. encoding='latin-1'"):
        _read(p, target="label")
    X, y = _read(p, target="label", encoding="latin-1")
    np.testing.assert_array_equal(y, ["ok", "café"])
    p = _write(tmp_path, "caf\xe9,label\n1,a\n".encode("cp1252"), "h.csv")
    with pytest.raises(bd.DataError, match=r"h\.csv: line 1 is not valid utf-8 text"):
        bd.open(p, target="label")
    assert bd.open(p, target="label", encoding="cp1252").feature_names == ["café"]


def test_encodings_that_are_not_ascii_compatible_are_refused(tmp_path):
    p = _write(tmp_path, "x,label\n1,a\n".encode("utf-16"))
    with pytest.raises(ValueError, match="'utf-16' is not ASCII-compatible.*convert the file to UTF-8"):
        bd.open(p, target="label", encoding="utf-16")
    with pytest.raises(ValueError, match="unknown encoding"):
        bd.open(p, encoding="no-such-codec")


# -- sizes and delimiters -------------------------------------------------------------------------
@pytest.mark.parametrize("length", [200_000, 1_500_000])
def test_very_long_fields(tmp_path, length):
    # Longer than 131,072 characters (the csv module's limit) and, for the second, than pyarrow's
    # 1 MiB parse block; a small chunk_bytes also makes the long line straddle chunk boundaries.
    long = "x" * length
    p = _write(tmp_path, f"a,label\n1,short\n2,{long}\n3,short\n")
    ds = bd.open(p, target="label", chunk_bytes=1000)
    X, y = ds.read_all()
    np.testing.assert_array_equal(X[:, 0], [1, 2, 3])
    assert len(y[1]) == length and ds.labels().size == 2


def test_delimiters(tmp_path):
    p = _write(tmp_path, "a;b;label\n1,5;2;x\n")
    with pytest.raises(bd.DataError, match=r"line 2, column 'a': '1,5' is not a number"):
        _read(p, target="label", delimiter=";")  # a decimal comma is not a number
    p = _write(tmp_path, "a\tb\tlabel\n1.5\t 2 \tx\n", "t.tsv")
    X, y = _read(p, target="label", delimiter="\t")
    np.testing.assert_array_equal(X, [[1.5, 2.0]])
    with pytest.raises(ValueError, match="delimiter must be one character"):
        bd.open(p, delimiter=";;")


# -- missing and bad values, with their lines ----------------------------------------------------
@pytest.mark.parametrize("label", ["", "NA", "  ", "N/A", "null"])
def test_missing_labels_are_errors_not_a_class(tmp_path, label):
    p = _write(tmp_path, f"x,label\n1,0\n\n2,1\n3,{label}\n4,1\n")
    with pytest.raises(bd.DataError, match=r"^.*d\.csv: line 5, column 'label': the label is missing \(empty or NA\); "
                                           r"every row needs a label$"):
        bd.open(p, target="label").labels()


def test_bad_features_name_line_and_column(tmp_path):
    body = "a,b,label\n1,2,0\n\n3,4,1\n"
    cases = {
        "5,x,1": r"line 5, column 'b': 'x' is not a number",
        "5,NA,1": r"line 5, column 'b': the value is missing",
        ",6,1": r"line 5, column 'a': the value is missing",
        "5,inf,1": r"line 5, column 'b': inf; features must be finite numbers",
        "5,6,1,7": r"line 5 has 4 fields, but the header has 3",
        "5,6": r"line 5 has 2 fields, but the header has 3",
    }
    for row, message in cases.items():
        p = _write(tmp_path, body + row + "\n6,7,0\n")
        with pytest.raises(bd.DataError, match=r"d\.csv: " + message):
            _read(p, target="label")


def test_the_first_problem_in_row_order_is_reported(tmp_path):
    p = _write(tmp_path, "a,b,label\n1,2,0\n3,n/a,1\n4,x,1\n")
    with pytest.raises(bd.DataError, match=r"line 3, column 'b': the value is missing"):
        _read(p, target="label")


def test_float32_overflow_is_named(tmp_path):
    p = _write(tmp_path, "a,label\n1,0\n1e300,1\n")
    _read(p, target="label")
    with pytest.raises(bd.DataError, match=r"line 3, column 'a': 1e\+300 does not fit in float32"):
        bd.open(p, target="label").read_all(np.float32)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_numbers_count_every_line_across_chunks(tmp_path, newline):
    rng = np.random.default_rng(0)
    lines = ["a,b,label"]
    for i in range(400):
        if rng.random() < 0.1:
            lines.append("")
        lines.append(f"{i},{rng.normal():.6f},{i % 3}")
    bad_line = 1 + int(np.flatnonzero([ln.startswith("313,") for ln in lines])[0])  # 1-based
    lines[bad_line - 1] = "313,oops,0"
    p = _write(tmp_path, newline.join(lines) + newline)
    ds = bd.open(p, target="label", chunk_bytes=256)
    assert ds.n_chunks > 20
    with pytest.raises(bd.DataError, match=rf"line {bad_line}, column 'b': 'oops' is not a number"):
        ds.read_all()
    lines[bad_line - 1] = "313,1.0,"
    p = _write(tmp_path, newline.join(lines) + newline)
    with pytest.raises(bd.DataError, match=rf"line {bad_line}, column 'label': the label is missing"):
        bd.open(p, target="label", chunk_bytes=256).labels()


# -- labels --------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, dtype, classes", [
    (["1", " 0", "1 ", "2"], np.int64, [0, 1, 2]),
    (["1", "0.5", "1e1", "2"], np.float64, [0.5, 1.0, 2.0, 10.0]),
    (["1", "b", "1.0", "a"], np.str_, ["1", "1.0", "a", "b"]),
])
def test_label_type_is_decided_by_every_label(tmp_path, labels, dtype, classes):
    text = "x,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate(labels))
    ds = bd.open(_write(tmp_path, text), target="label", chunk_bytes=1)  # one row per chunk
    assert ds.n_chunks == len(labels)
    y = ds.read_all()[1]
    assert y.dtype.type == dtype
    np.testing.assert_array_equal(ds.labels(), classes)


# -- chunks, shards, passes ----------------------------------------------------------------------
def test_chunks_read_in_any_order_and_shards_read_only_their_own(tmp_path, monkeypatch):
    rows = [f"{i},{i * 0.5},{i % 2}" for i in range(300)]
    p = _write(tmp_path, "a,b,label\n" + "\n".join(rows) + "\n")
    ds = bd.open(p, target="label", chunk_bytes=300)
    parsed = []
    real = ds._f.parse
    monkeypatch.setattr(ds._f, "parse", lambda s, cols, types: parsed.append((s, tuple(cols))) or real(s, cols, types))
    shard = ds.shard(1, 3)
    assert parsed == []  # opening and sharding read only the header and the chunk boundaries
    n = ds.n_chunks
    assert shard.n_rows > 0
    assert parsed == [(s, ("label",)) for s in range(n)]  # the first pass: the target column alone
    parsed.clear()
    X, y = shard.read_all()
    lo, hi = n // 3, 2 * n // 3
    assert sorted(s for s, _ in parsed) == list(range(lo, hi))
    starts = [c.start for c in shard.iter_chunks()]
    np.testing.assert_array_equal(X[:, 0], np.arange(starts[0], starts[0] + len(X)))
    back = list(ds.iter_chunks(order=np.arange(n)[::-1]))
    assert [c.start for c in back] == sorted((c.start for c in back), reverse=True)
    np.testing.assert_array_equal(np.concatenate([c.X for c in back[::-1]])[:, 0], np.arange(300))
    np.testing.assert_array_equal(ds.stats()[0], [149.5, 74.75])


def test_empty_and_header_only_files(tmp_path):
    with pytest.raises(bd.DataError, match=r"d\.csv: the file is empty"):
        bd.open(_write(tmp_path, "\n\n"))
    ds = bd.open(_write(tmp_path, "a,label\n\n", "h.csv"), target="label")
    assert ds.n_rows == 0
    X, y = ds.read_all()
    assert X.shape == (0, 1) and len(y) == 0


def test_batches_from_csv(tmp_path):
    rows = [f"{i},{i % 3}" for i in range(100)]
    ds = bd.open(_write(tmp_path, "a,label\n" + "\n".join(rows)), target="label", chunk_bytes=64)
    out = list(ds.batches(16, rng=np.random.default_rng(0), shuffle_buffer=2))
    X = np.concatenate([b[0] for b in out])[:, 0]
    y = np.concatenate([b[1] for b in out])
    np.testing.assert_array_equal(np.sort(X), np.arange(100))
    np.testing.assert_array_equal(y, X.astype(int) % 3)
    assert not np.array_equal(X, np.arange(100))  # shuffled


@pytest.mark.parametrize("sep, hint", [(";", "pass delimiter=';' (--delimiter ';')"),
                                       ("\t", "pass delimiter='\\t' (--delimiter '\\t')"),
                                       ("|", "pass delimiter='|' (--delimiter '|')")])
def test_a_header_of_one_column_holding_another_delimiter_suggests_it(tmp_path, sep, hint):
    (tmp_path / "d.csv").write_text(sep.join(["mean radius", "mean texture", "diagnosis"]) + "\n"
                                    + sep.join(["1.5", "2", "M"]) + "\n")
    with pytest.raises(bd.DataError, match="no column named 'diagnosis' for the target") as e:
        bd.open(tmp_path / "d.csv", target="diagnosis")
    assert str(e.value).endswith(f"; the header is one column that holds {'a tab' if sep == chr(9) else repr(sep)}: "
                                 f"if the file is {'tab' if sep == chr(9) else repr(sep)}-separated, {hint}")
    # Without a target the one column is read as a feature: its values are no numbers, with the same hint.
    with pytest.raises(bd.DataError, match="is not a number; the header is one column that holds"):
        bd.open(tmp_path / "d.csv").read_all()
    ds = bd.open(tmp_path / "d.csv", target="diagnosis", delimiter=sep)  # the hint's advice works
    assert ds.feature_names == ["mean radius", "mean texture"]


def test_no_hint_when_the_header_has_several_columns(tmp_path):
    (tmp_path / "d.csv").write_text("a;b,c\n1,2\n")
    with pytest.raises(bd.DataError) as e:
        bd.open(tmp_path / "d.csv", target="label")
    assert "header is one column" not in str(e.value)
