"""CSV files, parsed and converted by pyarrow's CSV reader (typed, multi-threaded), chunk by chunk.

Chunks. The file is cut into byte ranges of about ``chunk_bytes`` that end at a line break, and
each range is parsed on its own by ``pyarrow.csv.read_csv``, with the column names and types
given. So a chunk can be read in any order, and a shard reads only its own byte ranges, as for
Parquet. This is how pyarrow itself cuts a file into blocks when values may not contain line
breaks (its default, ``ParseOptions.newlines_in_values=False``), and it needs the same: **a quoted
value must not contain a line break**, and the encoding must keep ``\\n`` and ``\\r`` single bytes
(UTF-8, Latin-1, cp1252 and every other ASCII-compatible encoding; not UTF-16 or UTF-32).
A line longer than a chunk makes its chunk longer: there is no limit on the length of a field.

Header (``header=``): ``True``: the first non-empty line holds the column names. ``False``: there
is no header; columns are named by 0-based index as strings (``"0"``, ``"1"``, ...). ``None`` (the
default): the first line is a header, but one in which any field parses as a number is refused
with an error suggesting ``header=False`` (``--no-header``) or ``header=True``: a header-less file
whose first row is data would otherwise lose that row silently (or shift every label by one).
A header of one column that holds ``;``, a tab or ``|`` makes a column error suggest ``delimiter=``.

pandas' index: ``df.to_csv(path)`` (pandas' default) writes the index as a first column with an
empty name. With ``features=None`` that column is no feature (it numbers the rows, and in sorted
data it is the label in disguise); it is listed in ``ignored_columns``, and ``features=["0", ...]``
still takes it.

Values: feature columns are converted to float64 by pyarrow (surrounding spaces allowed); an
empty field or one of pyarrow's null spellings (``NA``, ``N/A``, ``NaN``, ``nan``, ``null``,
``NULL``, ``#N/A``, ...) is a missing value: in a feature column an error, in the target column a
missing label, also an error (never an extra class). Labels are the target column's text with
surrounding spaces removed, as int64 when every label of the data set is an integer, else float64
when every label is a number, else ``str``. The type is decided by the first pass.

The first pass parses the target column alone (the first feature column when there is no target)
of every chunk of the file: it counts the rows of each chunk and collects the labels of each
chunk. It runs once per file (shards of it share it), on first use of ``n_rows``, ``chunk_rows()``,
``labels()``, ``iter_chunks()`` (and so ``batches()``, ``stats()``, ``read_all()``); opening the
file and ``shard()`` read only the header and the chunk boundaries.

Line numbers in errors are 1-based, as editors count them: every ``\\n``, ``\\r\\n`` or ``\\r`` ends a
line, the header and empty lines included. pyarrow skips empty lines (kept: a blank line at the
end of a file is common and harmless), so the data row ``j`` of a chunk is its ``j``-th non-empty
line, and its line number is the number of line breaks before the chunk plus its line within the
chunk, plus one. These are computed only when an error is raised.

UTF-8 is the default encoding and a UTF-8 byte order mark is skipped. Any other encoding that
Python knows is transcoded by pyarrow (``ReadOptions.encoding``); text that does not decode is an
error naming the file and the line and suggesting ``encoding=``.
"""

from __future__ import annotations

import codecs
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _arrow
from .dataset import Chunk, DataError, Dataset, resolve_columns, split_range

CHUNK_BYTES = 4 << 20
BLOCK_BYTES = 1 << 20  # pyarrow's parse block inside a chunk: blocks are parsed in parallel
BOM = codecs.BOM_UTF8
_PIECE = 1 << 16


def _line_end(f: Any, pos: int, size: int) -> int:
    """The offset just after the first line break at or after ``pos`` (``\\r\\n`` is one break),
    or ``size`` when none follows."""
    f.seek(pos)
    while pos < size:
        piece = f.read(_PIECE + 1)  # one byte more: a "\r" at the end may be followed by "\n"
        hits = [i for i in (piece.find(b"\n", 0, _PIECE), piece.find(b"\r", 0, _PIECE)) if i >= 0]
        if hits:
            i = min(hits)
            return pos + i + (2 if piece[i:i + 2] == b"\r\n" else 1)
        pos += _PIECE
        f.seek(pos)
    return size


def _line_breaks(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


# Other common delimiters, as an error message names them.
_OTHER_DELIMITERS = {";": ("';'", "';'"), "\t": ("a tab", "tab"), "|": ("'|'", "'|'")}


def delimiter_hint(names: Sequence[str], delimiter: str) -> str:
    """``"; ... pass delimiter=';' ..."`` when the header is one column that holds another common
    delimiter (a ``;``-separated file read with ``,``), else ``""``: the end of an error message."""
    if len(names) != 1:
        return ""
    for d, (holds, word) in _OTHER_DELIMITERS.items():
        if d != delimiter and d in names[0]:
            option = "\\t" if d == "\t" else d
            return (f"; the header is one column that holds {holds}: if the file is {word}-separated, pass "
                    f"delimiter={d!r} (--delimiter '{option}')")
    return ""


def column_names(path: str, *, header: bool | None = None, delimiter: str = ",", encoding: str = "utf-8") -> list[str]:
    """The column names of a CSV file as ``open_csv`` reads them (the header; ``"0"``, ``"1"``, ...
    with ``header=False``), reading the first line only."""
    return _File(path, None, None, header, delimiter, encoding, os.path.getsize(path) + 1).names


class _File:
    """What every view of one CSV file shares: options, names, chunk boundaries, the first pass."""

    def __init__(
        self,
        path: str,
        target: str | int | None,
        features: Sequence[str | int] | None,
        header: bool | None,
        delimiter: str,
        encoding: str,
        chunk_bytes: int,
    ) -> None:
        self.pa = _arrow.pyarrow("CSV")
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv

        self.pc, self.pcsv, self.path = pc, pcsv, path
        if header not in (None, True, False):
            raise ValueError(f"header must be None, True or False; got {header!r}")
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
            raise ValueError(f"delimiter must be one character other than a quote or line break; got {delimiter!r}")
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, (int, np.integer)) or chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be an int >= 1; got {chunk_bytes!r}")
        try:
            codec = codecs.lookup(encoding).name
        except (LookupError, TypeError):
            raise ValueError(f"unknown encoding {encoding!r}") from None
        sample = "\n\r,;\t|0123456789.-+eE\" "
        if codec != "utf-8-sig" and sample.encode(codec, errors="replace") != sample.encode("ascii"):
            raise ValueError(f"encoding {encoding!r} is not ASCII-compatible: bp_gpu cuts CSV files into chunks at "
                             "line breaks, which needs single-byte line breaks; convert the file to UTF-8 "
                             f"(e.g. iconv -f {encoding} -t UTF-8)")
        self.utf8 = codec in ("utf-8", "utf-8-sig")
        # pyarrow transcodes any other encoding through Python's codec and passes UTF-8 through
        # untouched (pyarrow/io.pxi, native_transcoding_input_stream); the BOM is skipped here.
        self.encoding = "utf-8" if self.utf8 else codec
        self.header, self.delimiter = header, delimiter
        self.size = os.path.getsize(path)
        with open(path, "rb") as f:
            start = len(BOM) if self.utf8 and f.read(len(BOM)) == BOM else 0
            first = self._first_line(f, start)
            if first is None:
                raise DataError(f"{path}: the file is empty (no line with data)")
            line0 = self._decode(first[2], first[0])
            fields = self._fields(first[2], line0)
            if header is False:
                names, data_start = [str(k) for k in range(len(fields))], start
            else:
                if header is None:
                    numbers = [s for s in fields if self._is_number(s)]
                    if numbers:
                        raise DataError(
                            f"{path}: line {line0} is read as the header, but {numbers[0]!r} there is a number: "
                            "if the file has no header row, pass header=False (--no-header); to use the line "
                            "as column names anyway, pass header=True (--header)")
                names, data_start = fields, first[1]
                dup = sorted({n for n in names if names.count(n) > 1})
                if dup:
                    raise DataError(f"{path}: the header names the column {dup[0]!r} more than once")
            self.segments = self._cut(f, data_start, chunk_bytes)
        self.names = names
        try:
            t, cols = resolve_columns(names, target, features, path)
        except DataError as exc:
            raise DataError(f"{exc}{delimiter_hint(names, delimiter)}") from None
        self.ignored_columns: list[str] = []
        if features is None and header is not False and names[0].strip() == "" and t != 0:
            # pandas' df.to_csv(path) writes the index as a first column with an empty name: it is
            # the row's number, not a feature (a label leaked through the row order, often).
            cols.remove(0)
            self.ignored_columns.append("column 0 (unnamed: a pandas index)")
            if not cols:
                raise DataError(f"{path}: the only column besides the target is column 0, unnamed (a pandas index); "
                                "pass features=['0'] (--features 0) to train on it anyway")
        self.feature_names = [names[k] for k in cols]
        self.target = None if t is None else names[t]
        self.lock = threading.Lock()
        self.rows: np.ndarray | None = None  # per chunk, after the first pass
        self.starts: np.ndarray | None = None
        self.seg_labels: list[np.ndarray] = []
        self.label_kind: str | None = None

    # -- opening --------------------------------------------------------------------------------
    def _first_line(self, f: Any, pos: int) -> tuple[int, int, bytes] | None:
        """``(start, end, text)`` of the first non-empty line at or after ``pos``."""
        while pos < self.size:
            end = _line_end(f, pos, self.size)
            f.seek(pos)
            text = f.read(end - pos).rstrip(b"\r\n")
            if text:
                return pos, end, text
            pos = end
        return None

    def _decode(self, text: bytes, offset: int) -> int:
        """The line number at ``offset``; raises the encoding error for an undecodable ``text``."""
        line = self.line_at(offset)
        try:
            text.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise self._encoding_error(line, exc) from None
        return line

    def _encoding_error(self, line: int, exc: Exception) -> DataError:
        hint = "e.g. encoding='latin-1' or 'cp1252'" if self.utf8 else "e.g. encoding='utf-8'"
        return DataError(f"{self.path}: line {line} is not valid {self.encoding} text ({exc}); pass the file's "
                         f"encoding with encoding= (--encoding), {hint}")

    def _fields(self, text: bytes, line: int) -> list[str]:
        """The fields of one line, as text, parsed by pyarrow with the file's options."""
        pa, pcsv = self.pa, self.pcsv
        ro = dict(encoding=self.encoding, autogenerate_column_names=True)
        text += b"\n"  # pyarrow reads a lone line without a line break as an empty file
        try:
            n = pcsv.read_csv(pa.BufferReader(text), read_options=pcsv.ReadOptions(**ro),
                              parse_options=self._parse_options()).num_columns
            table = pcsv.read_csv(
                pa.BufferReader(text), read_options=pcsv.ReadOptions(**ro), parse_options=self._parse_options(),
                convert_options=pcsv.ConvertOptions(column_types={f"f{k}": pa.string() for k in range(n)},
                                                    null_values=[], strings_can_be_null=False,
                                                    quoted_strings_can_be_null=False))
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            raise DataError(f"{self.path}: line {line} cannot be read as CSV ({exc})") from None
        return [table.column(k)[0].as_py() for k in range(n)]

    def _is_number(self, s: str) -> bool:
        try:
            self.pc.cast(self.pc.utf8_trim_whitespace(self.pa.array([s])), self.pa.float64())
        except self.pa.ArrowInvalid:
            return False
        return True

    def _cut(self, f: Any, start: int, chunk_bytes: int) -> list[tuple[int, int]]:
        out, a = [], start
        while a < self.size:
            b = self.size if a + chunk_bytes >= self.size else _line_end(f, a + chunk_bytes - 1, self.size)
            out.append((a, b))
            a = b
        return out

    def _parse_options(self, handler: Any = None) -> Any:
        return self.pcsv.ParseOptions(delimiter=self.delimiter, invalid_row_handler=handler)

    # -- lines ----------------------------------------------------------------------------------
    def line_at(self, offset: int) -> int:
        """The 1-based line number of the line starting at byte ``offset``."""
        n, last = 0, b""
        with open(self.path, "rb") as f:
            pos = 0
            while pos < offset:
                piece = f.read(min(16 << 20, offset - pos))
                n += _line_breaks(piece) - (last == b"\r" and piece[:1] == b"\n")
                last, pos = piece[-1:], pos + len(piece)
        return n + 1

    def _segment_bytes(self, s: int) -> bytes:
        # A plain read into a private buffer, freed with the chunk: memory-mapping the file would
        # leave every chunk read so far in the resident set.
        a, b = self.segments[s]
        with open(self.path, "rb") as f:
            f.seek(a)
            return f.read(b - a)

    def line_of(self, s: int, j: int) -> int:
        """The line number of data row ``j`` (0-based) of chunk ``s``: its ``j``-th non-empty line."""
        seen = -1
        for k, text in enumerate(self._segment_bytes(s).splitlines()):
            seen += bool(text)
            if seen == j:
                return self.line_at(self.segments[s][0]) + k
        raise AssertionError(f"chunk {s} has no data row {j}")

    def _lines(self, s: int) -> str:
        a, b = self.segments[s]
        first = self.line_at(a)
        last = first + _line_breaks(self._segment_bytes(s).rstrip(b"\r\n"))
        return f"lines {first}-{last}"

    # -- parsing one chunk ----------------------------------------------------------------------
    def parse(self, s: int, columns: list[str], types: dict[str, Any]) -> Any:
        """Chunk ``s`` as an Arrow table of ``columns`` with ``types``; parse and conversion errors
        become a ``DataError`` naming the line and the column."""
        pa, pcsv = self.pa, self.pcsv
        data = pa.py_buffer(self._segment_bytes(s))
        co = pcsv.ConvertOptions(include_columns=columns, column_types=types, strings_can_be_null=True)
        block = BLOCK_BYTES
        while True:
            ro = pcsv.ReadOptions(column_names=self.names, block_size=block, encoding=self.encoding)
            try:
                return pcsv.read_csv(pa.BufferReader(data), read_options=ro, parse_options=self._parse_options(),
                                     convert_options=co)
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                if "straddl" in str(exc) and block <= len(data):
                    block = len(data) + 1  # a line longer than a block: parse the chunk as one block
                    continue
                text = data.to_pybytes()
                if not text.strip(b"\r\n"):  # only empty lines: pyarrow calls that an empty file
                    return pa.table({c: pa.array([], types[c]) for c in columns})
                raise self._diagnose(s, text, columns, exc) from None

    def _diagnose(self, s: int, data: bytes, columns: list[str], exc: Exception) -> DataError:
        """Find where chunk ``s`` failed: re-read it in the slow, exact ways pyarrow offers."""
        pa, pcsv = self.pa, self.pcsv
        # Text that does not decode: the first undecodable line.
        for k, text in enumerate(data.splitlines()):
            try:
                text.decode(self.encoding)
            except UnicodeDecodeError as bad:
                return self._encoding_error(self.line_at(self.segments[s][0]) + k, bad)
        # A row with too many or too few fields: pyarrow numbers rows (non-empty lines) when it
        # parses serially.
        invalid: list[Any] = []

        def handler(row: Any) -> str:
            invalid.append(row)
            return "error"

        ro = pcsv.ReadOptions(column_names=self.names, block_size=len(data) + 1, encoding=self.encoding,
                              use_threads=False)
        text_types = {c: pa.string() for c in columns}
        try:
            table = pcsv.read_csv(pa.BufferReader(data), read_options=ro, parse_options=self._parse_options(handler),
                                  convert_options=pcsv.ConvertOptions(include_columns=columns, column_types=text_types,
                                                                      strings_can_be_null=True))
        except pa.ArrowInvalid:
            if invalid and invalid[0].number not in (None, -1):
                row = invalid[0]
                return DataError(f"{self.path}: line {self.line_of(s, row.number - 1)} has {row.actual_columns} "
                                 f"fields, but the {'header has' if self.header is not False else 'file has'} "
                                 f"{row.expected_columns}")
            return DataError(f"{self.path}: {self._lines(s)} cannot be read as CSV ({exc})")
        # A missing value or one that is not a number: the first, in row order, then column order.
        bad: tuple[int, int, str] | None = None
        for k, name in enumerate(columns):
            if name == self.target:
                continue
            col = table.column(name).combine_chunks()
            for j in (_arrow.first_null(col), self._first_non_number(col)):
                if j is not None and (bad is None or (j, k) < bad[:2]):
                    bad = (j, k, name)
        if bad is not None:
            j, _, name = bad
            value = table.column(name)[j].as_py()
            what = ("the value is missing (empty or NA); features must be numbers" if value is None
                    else f"{value!r} is not a number")
            return DataError(f"{self.path}: line {self.line_of(s, j)}, column {name!r}: {what}"
                             f"{delimiter_hint(self.names, self.delimiter)}")
        return DataError(f"{self.path}: {self._lines(s)} cannot be read as CSV ({exc})")

    def _first_non_number(self, col: Any) -> int | None:
        """Index of the first value that does not convert to float64 the way pyarrow's CSV reader
        converts (surrounding spaces trimmed, then parsed), by bisection over prefixes."""
        pa, pc = self.pa, self.pc
        col = pc.utf8_trim_whitespace(col)

        def converts(m: int) -> bool:
            try:
                pc.cast(col.slice(0, m), pa.float64())
            except pa.ArrowInvalid:
                return False
            return True

        if converts(len(col)):
            return None
        lo, hi = 0, len(col)  # converts(lo) holds, converts(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if converts(mid) else (lo, mid)
        return hi - 1

    # -- labels and the first pass --------------------------------------------------------------
    def label_text(self, s: int, col: Any) -> Any:
        """The target column of chunk ``s`` as trimmed text; a missing label is an error."""
        pc = self.pc
        col = pc.utf8_trim_whitespace(col)
        missing = pc.or_kleene(pc.is_null(col), pc.equal(col, ""))  # Kleene: null or x is true
        if pc.any(missing).as_py():
            j = int(pc.index(missing, True).as_py())
            raise DataError(f"{self.path}: line {self.line_of(s, j)}, column {self.target!r}: the label is missing "
                            "(empty or NA); every row needs a label")
        return col

    def convert_labels(self, text: Any) -> np.ndarray:
        pa, pc = self.pa, self.pc
        if self.label_kind == "int":
            return pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False)
        if self.label_kind == "float":
            return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        return text.to_numpy(zero_copy_only=False).astype(str)

    def first_pass(self) -> None:
        with self.lock:
            if self.rows is not None:
                return
            pa, pc = self.pa, self.pc
            column = self.target if self.target is not None else self.feature_names[0]
            rows, uniques = [], []
            for s in range(len(self.segments)):
                col = self.parse(s, [column], {column: pa.string()}).column(column)
                rows.append(len(col))
                if self.target is not None:
                    uniques.append(pc.unique(self.label_text(s, col).combine_chunks()))
            if self.target is not None:
                every = pc.unique(pa.concat_arrays(uniques)) if uniques else pa.array([], pa.string())
                self.label_kind = "str"
                for kind, t in (("int", pa.int64()), ("float", pa.float64())):
                    try:
                        pc.cast(every, t)
                    except pa.ArrowInvalid:
                        continue
                    self.label_kind = kind
                    break
                self.seg_labels = [self.convert_labels(u) for u in uniques]
            self.starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
            self.rows = np.array(rows, dtype=np.int64)


class CsvDataset(Dataset):
    """A CSV file; see the module docstring."""

    format = "csv"

    def __init__(self, file: _File, lo: int, hi: int) -> None:
        super().__init__()
        self._f, self._lo, self._hi = file, lo, hi
        self.path, self.feature_names, self.target = file.path, file.feature_names, file.target
        self.ignored_columns = file.ignored_columns

    @property
    def n_chunks(self) -> int:
        return self._hi - self._lo

    @property
    def named_columns(self) -> bool:
        return self._f.header is not False

    def chunk_rows(self) -> np.ndarray:
        self._f.first_pass()
        return self._f.rows[self._lo:self._hi].copy()

    def _read_chunk(self, i: int, dtype: np.dtype) -> Chunk:
        self._f.first_pass()
        return self._read_into(i, np.empty((int(self._f.rows[self._lo + i]), self.n_features), dtype))

    def _read_into(self, i: int, out: np.ndarray) -> Chunk:
        f, s = self._f, self._lo + i
        f.first_pass()
        names = self.feature_names
        types = {n: f.pa.float64() for n in names}
        columns = list(names)
        if self.target is not None:
            types[self.target] = f.pa.string()
            columns.append(self.target)
        table = f.parse(s, columns, types)
        X = _arrow.features([table.column(n) for n in names], table.num_rows, out.dtype,
                            lambda j, k: f"{self.path}: line {f.line_of(s, j)}, column {names[k]!r}", out)
        y = None
        if self.target is not None:
            y = f.convert_labels(f.label_text(s, table.column(self.target)))
        return Chunk(X, y, int(f.starts[s]))

    def _chunk_labels(self, i: int) -> np.ndarray:
        self._f.first_pass()
        return self._f.seg_labels[self._lo + i]

    def shard(self, rank: int, world: int) -> CsvDataset:
        lo, hi = split_range(self.n_chunks, rank, world)
        return CsvDataset(self._f, self._lo + lo, self._lo + hi)


def open_csv(
    path: str,
    target: str | int | None = None,
    features: Sequence[str | int] | None = None,
    *,
    header: bool | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    chunk_bytes: int = CHUNK_BYTES,
) -> CsvDataset:
    f = _File(path, target, features, header, delimiter, encoding, chunk_bytes)
    return CsvDataset(f, 0, len(f.segments))
