"""What every reader shares: streaming moments, sharding, the label pass, column resolution, and
the background-thread batch iterator (exact order, bounded memory, errors, stopping)."""

import gc
import threading
import time

import numpy as np
import pytest

import bp_gpu.data as bd
from bp_gpu.data.batches import THREAD_NAME
from bp_gpu.data.dataset import resolve_columns, split_range
from bp_gpu.data.moments import Moments


def _batch_threads():
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture(autouse=True)
def _no_thread_left():
    yield
    gc.collect()
    assert _batch_threads() == [], "a batch thread is still running after the test"


# -- moments ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes", [[2], [7, 1, 30], [5] * 9, [0, 3, 0, 4]])
def test_chan_merge_equals_two_pass_over_everything(rng, sizes):
    parts = [rng.normal(3.0, 2.0, size=(n, 4)) for n in sizes]
    m = Moments.empty(4)
    for p in parts:
        m = m.merge(Moments.of(p))
    X = np.concatenate(parts)
    mean, std = m.mean_std()
    assert m.n == len(X)
    np.testing.assert_allclose(mean, X.mean(0), rtol=1e-13)
    np.testing.assert_allclose(std, X.std(0), rtol=1e-12)


def test_moments_keep_their_digits_when_the_mean_is_large(rng):
    # E[x^2] - E[x]^2 in float64 loses every digit of a spread of 1 around 1e9; the merge does not.
    X = 1e9 + rng.normal(size=(10_000, 1))
    m = Moments.empty(1)
    for part in np.array_split(X, 37):
        m = m.merge(Moments.of(part))
    exact = np.std(X - 1e9)
    np.testing.assert_allclose(m.mean_std()[1], [exact], rtol=1e-6)


def test_constant_feature_gets_std_one_so_it_standardises_to_zero():
    X = np.column_stack([np.full(1000, 0.1), np.arange(1000.0), np.zeros(1000)])
    m = Moments.empty(3)
    for part in np.array_split(X, 7):
        m = m.merge(Moments.of(part))
    mean, std = m.mean_std()
    assert std[0] == 1.0 and std[2] == 1.0 and std[1] == pytest.approx(np.arange(1000.0).std())
    np.testing.assert_allclose((X[:, 0] - mean[0]) / std[0], 0.0, atol=1e-15)


def test_stats_of_a_dataset_is_the_streaming_pass():
    X = np.random.default_rng(1).normal(5, 3, size=(101, 3))
    X[:, 2] = 4.0
    mean, std = bd.from_arrays(X, chunk_rows=10).stats()
    np.testing.assert_allclose(mean, X.mean(0), rtol=1e-13)
    np.testing.assert_allclose(std[:2], X[:, :2].std(0), rtol=1e-12)
    assert std[2] == 1.0
    with pytest.raises(ValueError, match="0 samples"):
        bd.from_arrays(X).shard(0, 200).stats()


# -- sharding and columns -----------------------------------------------------------------------
def test_split_range_is_contiguous_balanced_and_complete():
    for n in (0, 1, 5, 17):
        for world in (1, 2, 3, 8):
            parts = [split_range(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank"):
        split_range(4, 2, 2)
    with pytest.raises(TypeError, match="rank"):
        split_range(4, 0.0, 2)


def test_shards_of_arrays_are_row_ranges_that_cover_the_data():
    X = np.arange(23.0).reshape(23, 1)
    ds = bd.from_arrays(X, np.arange(23) % 3, chunk_rows=4)
    got = []
    for r in range(3):
        sh = ds.shard(r, 3)
        lo, hi = split_range(23, r, 3)
        Xr, yr = sh.read_all()
        got.append(Xr[:, 0])
        np.testing.assert_array_equal(yr, np.arange(lo, hi) % 3)
        assert [c.start for c in sh.iter_chunks()] == list(range(lo, hi, 4))  # global row indices
    np.testing.assert_array_equal(np.concatenate(got), X[:, 0])
    assert [ds.shard(r, 3).n_rows for r in range(3)] == [7, 8, 8]
    assert ds.shard(4, 30).n_rows == 0 and ds.shard(4, 30).n_chunks == 0


def test_resolve_columns_by_name_index_and_string_index():
    names = ["a", "b", "c", "3"]
    assert resolve_columns(names, "b", None, "f") == (1, [0, 2, 3])
    assert resolve_columns(names, 0, ["c", 1], "f") == (0, [2, 1])
    assert resolve_columns(names, "-1", None, "f") == (3, [0, 1, 2])  # "-1" is not a name: an index
    assert resolve_columns(names, "3", None, "f") == (3, [0, 1, 2])  # "3" is a name first
    assert resolve_columns(names, None, None, "f") == (None, [0, 1, 2, 3])
    with pytest.raises(bd.DataError, match=r"f: no column named 'z' for the target \(columns: \['a', 'b'"):
        resolve_columns(names, "z", None, "f")
    with pytest.raises(bd.DataError, match="out of range for 4 columns"):
        resolve_columns(names, 9, None, "f")
    with pytest.raises(bd.DataError, match="also listed in features"):
        resolve_columns(names, "a", ["a", "b"], "f")
    with pytest.raises(bd.DataError, match="twice"):
        resolve_columns(names, None, ["a", 0], "f")
    with pytest.raises(bd.DataError, match="no feature columns"):
        resolve_columns(["y"], "y", None, "f")


# -- from_arrays --------------------------------------------------------------------------------
def test_from_arrays_reads_back_exactly_in_chunks(rng):
    X = rng.normal(size=(50, 3))
    y = np.array(["a", "b"])[rng.integers(0, 2, 50)]
    ds = bd.from_arrays(X, y, chunk_rows=8)
    assert (ds.format, ds.n_features, ds.n_rows, ds.n_chunks, ds.target) == ("arrays", 3, 50, 7, "y")
    assert list(ds.chunk_rows()) == [8] * 6 + [2]
    chunks = list(ds.iter_chunks(order=[6, 0]))
    assert [c.start for c in chunks] == [48, 0]
    assert chunks[0].X.flags.c_contiguous and chunks[0].X.dtype == np.float64
    np.testing.assert_array_equal(chunks[0].X, X[48:])
    X32, y32 = ds.read_all(np.float32)
    assert X32.dtype == np.float32 and np.array_equal(y32, y)
    np.testing.assert_array_equal(ds.labels(), ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        list(ds.iter_chunks(order=[7]))
    with pytest.raises(ValueError, match="float32 or float64"):
        ds.read_all(np.int32)


def test_from_arrays_errors_name_the_entry():
    X = np.ones((6, 2))
    X[4, 1] = np.nan
    with pytest.raises(bd.DataError, match=r"^X\[4, 1\]: NaN; features must be finite numbers$"):
        bd.from_arrays(X, chunk_rows=4).read_all()
    X = np.ones((3, 2))
    X[2, 0] = 1e300
    bd.from_arrays(X).read_all()  # fine in float64
    with pytest.raises(bd.DataError, match=r"X\[2, 0\]: 1e\+300 does not fit in float32"):
        bd.from_arrays(X).read_all(np.float32)
    with pytest.raises(bd.DataError, match=r"y\[1\]: the label is missing"):
        bd.from_arrays(np.ones((3, 1)), np.array([0.0, np.nan, 1.0])).labels()
    with pytest.raises(bd.DataError, match=r"y\[2\]: the label is missing"):
        bd.from_arrays(np.ones((3, 1)), np.array(["a", "b", None], dtype=object)).labels()
    with pytest.raises(bd.DataError, match="must have shape"):
        bd.from_arrays(np.ones((3, 1)), np.ones(4))
    with pytest.raises(bd.DataError, match="2-D numeric"):
        bd.from_arrays(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="no target"):
        bd.from_arrays(np.ones((3, 1))).labels()


# -- batches: the order ---------------------------------------------------------------------------
def _reference_epoch(ds, batch_size, rng, shuffle_buffer):
    """The order the docstring of bp_gpu.data.batches defines, written out plainly."""
    order = rng.permutation(ds.n_chunks)
    shuffle = np.random.default_rng(int(rng.integers(2**63)))
    chunks = [ds._read_chunk(int(i), np.dtype(np.float64)) for i in order]
    out, carry_X, carry_y = [], np.empty((0, ds.n_features)), np.empty(0, dtype=int)
    for g in range(0, len(chunks), shuffle_buffer):
        X = np.concatenate([carry_X] + [c.X for c in chunks[g:g + shuffle_buffer]])
        y = np.concatenate([carry_y] + [c.y for c in chunks[g:g + shuffle_buffer]])
        perm = shuffle.permutation(len(X))
        full = len(X) // batch_size * batch_size
        out += [(X[perm[s:s + batch_size]], y[perm[s:s + batch_size]]) for s in range(0, full, batch_size)]
        carry_X, carry_y = X[perm[full:]], y[perm[full:]]
    if len(carry_X):
        out.append((carry_X, carry_y))
    return out


@pytest.mark.parametrize("n, chunk_rows, batch, buffer",
                         [(103, 10, 7, 3), (40, 8, 8, 1), (5, 2, 64, 4), (64, 64, 16, 2)])
def test_batches_follow_the_documented_order_exactly(n, chunk_rows, batch, buffer):
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    ds = bd.from_arrays(X, np.arange(n), chunk_rows=chunk_rows)
    got = list(ds.batches(batch, rng=np.random.default_rng(7), shuffle_buffer=buffer, dtype=np.float64))
    want = _reference_epoch(ds, batch, np.random.default_rng(7), buffer)
    assert len(got) == len(want) == -(-n // batch)
    for (gX, gy), (wX, wy) in zip(got, want):
        np.testing.assert_array_equal(gX, wX)
        np.testing.assert_array_equal(gy, wy)
        assert gX.flags.c_contiguous
    assert all(len(b[0]) == batch for b in got[:-1]) and 1 <= len(got[-1][0]) <= batch
    # every row exactly once, each with its own label
    ys = np.concatenate([b[1] for b in got])
    np.testing.assert_array_equal(np.sort(ys), np.arange(n))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got])[:, 0], ys * 2.0)


def test_batches_are_reproducible_and_leave_rng_in_a_documented_state():
    ds = bd.from_arrays(np.arange(200.0).reshape(100, 2), np.arange(100), chunk_rows=9)
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    a = [y for _, y in ds.batches(16, rng=r1)]
    b = [y for _, y in ds.batches(16, rng=r2)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    r3 = np.random.default_rng(3)
    r3.permutation(ds.n_chunks)
    r3.integers(2**63)
    assert r1.integers(1 << 30) == r3.integers(1 << 30)
    c = [y for _, y in ds.batches(16, rng=r1)]  # the next epoch: another order
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_batches_dtype_and_no_target():
    ds = bd.from_arrays(np.ones((10, 3)), chunk_rows=3)
    out = list(ds.batches(4, rng=np.random.default_rng(0)))
    assert [len(X) for X, _ in out] == [4, 4, 2]
    assert all(X.dtype == np.float32 and y is None for X, y in out)
    with pytest.raises(ValueError, match="batch_size"):
        ds.batches(0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        ds.batches(4, rng=np.random.RandomState(0))


# -- batches: the thread ----------------------------------------------------------------------------
class _Counting(bd.Dataset):
    """A data set that counts chunk reads, sleeps in them, or fails at one."""

    format = "test"

    def __init__(self, n_chunks=50, rows=10, fail_at=None, delay=0.0):
        super().__init__()
        self.path, self.feature_names, self.target = "<test>", ["a"], "y"
        self._n, self._rows, self.fail_at, self.delay, self.reads = n_chunks, rows, fail_at, delay, 0

    @property
    def n_chunks(self):
        return self._n

    def chunk_rows(self):
        return np.full(self._n, self._rows)

    def _read_chunk(self, i, dtype):
        self.reads += 1
        time.sleep(self.delay)
        if i == self.fail_at:
            raise bd.DataError(f"<test>: chunk {i} is bad")
        start = i * self._rows
        return bd.Chunk(np.full((self._rows, 1), i, dtype), np.arange(start, start + self._rows), start)

    def _chunk_labels(self, i):
        return np.arange(i * self._rows, (i + 1) * self._rows)

    def shard(self, rank, world):
        raise NotImplementedError


def test_reading_stays_bounded_by_buffer_and_prefetch():
    ds = _Counting(n_chunks=50, rows=10)
    it = ds.batches(10, rng=np.random.default_rng(0), shuffle_buffer=2, prefetch=2)
    next(it)
    time.sleep(0.3)  # the reader runs ahead until every buffer is full, then waits
    # the buffer being cut into batches and 2 filled ahead, of 2 chunks each
    assert ds.reads <= 6
    it.close()
    assert _batch_threads() == []


def test_an_error_in_the_thread_is_raised_in_the_consumer_at_its_batch():
    ds = _Counting(n_chunks=20, rows=5, fail_at=7)
    order = np.random.default_rng(0).permutation(20)
    position = int(np.flatnonzero(order == 7)[0])
    seen = 0
    with pytest.raises(bd.DataError, match="chunk 7 is bad"):
        for _X, _y in ds.batches(5, rng=np.random.default_rng(0), shuffle_buffer=1):
            seen += 1
    assert seen == position
    assert _batch_threads() == []


@pytest.mark.parametrize("how", ["break", "exception", "keyboard", "close", "drop"])
def test_leaving_the_loop_stops_the_thread_promptly(how):
    ds = _Counting(n_chunks=10_000, rows=10, delay=0.001)
    it = ds.batches(10, rng=np.random.default_rng(0), shuffle_buffer=1, prefetch=2)
    t0 = time.perf_counter()
    if how == "break":
        for _ in it:
            break
        del it
    elif how in ("exception", "keyboard"):
        exc = RuntimeError if how == "exception" else KeyboardInterrupt
        with pytest.raises(exc):
            for _ in it:
                raise exc("consumer fails")
        del it
    elif how == "close":
        next(it)
        it.close()
    else:
        next(it)
        del it
    assert _batch_threads() == []
    assert time.perf_counter() - t0 < 5.0
    assert ds.reads < 100  # it did not read on to the end of the epoch


# -- the batch reader the training loop uses --------------------------------------------------------
def test_reader_with_encode_and_transform_gives_the_documented_batches():
    """The reader hands out (buffer, labels, row indices): with encode (labels -> targets, per chunk)
    and transform (in place, per chunk) the rows gathered are those of ``batches()``, encoded and
    transformed, epoch after epoch from the same reused buffers."""
    from bp_gpu.data.batches import BatchReader

    n = 103
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    ds = bd.from_arrays(X, np.arange(n) % 3, chunk_rows=10)
    reader = BatchReader(ds, 7, shuffle_buffer=3, dtype=np.float64, prefetch=2,
                         encode=lambda y: np.eye(3)[y], transform=lambda A: np.multiply(A, 2.0, out=A))
    buffers = set()
    for epoch in range(2):
        want = list(ds.batches(7, rng=np.random.default_rng(epoch), shuffle_buffer=3, dtype=np.float64))
        got = []
        for Xbuf, T, idx in reader.epoch(np.random.default_rng(epoch)):
            buffers.add(Xbuf.__array_interface__["data"][0])
            got.append((Xbuf[idx], T[idx]))
        assert len(got) == len(want)
        for (gX, gT), (wX, wy) in zip(got, want):
            np.testing.assert_array_equal(gX, 2 * wX)
            np.testing.assert_array_equal(gT, np.eye(3)[wy])
    assert len(buffers) == 3  # prefetch + 1 buffers, reused from epoch to epoch


def test_a_new_epoch_closes_the_previous_one():
    from bp_gpu.data.batches import BatchReader

    ds = _Counting(n_chunks=1000, rows=10, delay=0.001)
    reader = BatchReader(ds, 10)
    first = reader.epoch(np.random.default_rng(0))
    next(first)
    second = reader.epoch(np.random.default_rng(1))
    with pytest.raises(StopIteration):
        next(first)
    next(second)
    second.close()
    assert _batch_threads() == []


class _Gated(bd.Dataset):
    """Ragged chunks of distinct rows whose reads can be shut: a read while shut fails."""

    format = "test"

    def __init__(self, sizes):
        super().__init__()
        self.path, self.feature_names, self.target = "<gated>", ["a", "b"], "y"
        self._sizes = np.asarray(sizes)
        self._starts = np.concatenate([[0], np.cumsum(self._sizes)])
        self.reads, self.open = 0, threading.Event()
        self.open.set()

    @property
    def n_chunks(self):
        return len(self._sizes)

    def chunk_rows(self):
        return self._sizes.copy()

    def _read_chunk(self, i, dtype):
        if not self.open.wait(2.0):
            raise bd.DataError(f"<gated>: chunk {i} read while reads are shut")
        self.reads += 1
        r = np.arange(self._starts[i], self._starts[i + 1])
        return bd.Chunk(np.column_stack([r, -r]).astype(dtype), r, int(self._starts[i]))

    def _chunk_labels(self, i):
        return np.arange(self._starts[i], self._starts[i + 1])

    def shard(self, rank, world):
        raise NotImplementedError


def _reference_epochs(ds, seed, epochs, between=None):
    """The batches of ``epochs`` one-epoch iterators that each draw from one generator: the order
    the module docstring defines, without reading ahead."""
    rng, out = np.random.default_rng(seed), []
    for _ in range(epochs):
        out.append([(X.copy(), y.copy()) for X, y in ds.batches(7, rng=rng, shuffle_buffer=2)])
        if between is not None:
            between(rng)
    return out


def _reader_epochs(reader, seed, epochs, between=None, after_epoch=None):
    rng, out = np.random.default_rng(seed), []
    for e in range(epochs):
        got = [(X[idx].copy(), Y[idx].copy()) for X, Y, idx in reader.epoch(rng)]
        out.append(got)
        if after_epoch is not None:
            after_epoch(e)
        if between is not None:
            between(rng)
    return out


def _assert_same_epochs(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert [len(x) for x, _ in g] == [len(x) for x, _ in w]
        for (gX, gy), (wX, wy) in zip(g, w):
            np.testing.assert_array_equal(gX, wX)
            np.testing.assert_array_equal(gy, wy)


def test_reading_ahead_is_used_and_gives_the_documented_batches():
    """With nothing else drawing from the generator, the next epoch's first buffer is read while
    the last one is cut: the epoch then starts with reads shut (it needs none), and every epoch's
    batches, ragged last ones included, are those of the documented order."""
    from bp_gpu.data.batches import BatchReader

    # 56 rows: buffers of 2 chunks (a full batch in each, so an epoch's first batch needs its
    # first buffer only), batches of 7, rows carried between buffers
    ds = _Gated([9, 4, 13, 5, 8, 11, 6])
    want = _reference_epochs(ds, 3, 4)
    ds.reads = 0
    reader = BatchReader(ds, 7, shuffle_buffer=2, dtype=np.float64)
    got = [[]]
    rng = np.random.default_rng(3)
    for _ in range(4):
        it = reader.epoch(rng)
        got[-1] = [(X[idx].copy(), Y[idx].copy()) for X, Y, idx in [next(it)]]
        ds.open.set()  # the first batch came from what was read ahead; the rest may read
        got[-1] += [(X[idx].copy(), Y[idx].copy()) for X, Y, idx in it]
        for _ in range(500):  # until the thread has read the next epoch's first buffer
            if ds.reads >= len(got) * 7 + 2:
                break
            time.sleep(0.01)
        ds.open.clear()
        got.append([])
    got.pop()
    ds.open.set()
    reader.close()
    _assert_same_epochs(got, want)


def test_reading_ahead_is_dropped_when_the_generator_was_used_in_between():
    """Another draw from the generator between epochs: what was read ahead is not the next
    epoch; it is dropped and the epoch read from its start, in the documented order."""
    from bp_gpu.data.batches import BatchReader

    ds = _Gated([9, 4, 13, 1, 8, 11, 6])
    draw = lambda rng: rng.integers(10)  # noqa: E731
    want = _reference_epochs(ds, 5, 3, between=draw)
    ds.reads = 0
    reader = BatchReader(ds, 7, shuffle_buffer=2, dtype=np.float64)

    def read_ahead_begun(e):
        for _ in range(500):
            if ds.reads > (e + 1) * 7:
                return
            time.sleep(0.01)

    _assert_same_epochs(_reader_epochs(reader, 5, 3, between=draw, after_epoch=read_ahead_begun), want)
    assert ds.reads > 3 * 7  # the dropped work was read again


def test_a_data_set_of_no_chunks_gives_empty_epochs_and_reads_nothing_ahead():
    from bp_gpu.data.batches import BatchReader

    reader = BatchReader(_Gated([]), 4)
    rng = np.random.default_rng(0)
    assert list(reader.epoch(rng)) == [] and list(reader.epoch(rng)) == []
    assert _batch_threads() == []  # nothing to read ahead: the thread ended with the epoch


def test_a_finished_reader_stops_its_thread_when_closed_or_dropped():
    from bp_gpu.data.batches import BatchReader

    ds = _Gated([5] * 6)
    reader = BatchReader(ds, 4, shuffle_buffer=2)
    for _ in reader.epoch(np.random.default_rng(0)):
        pass
    assert len(_batch_threads()) == 1  # reading the next epoch ahead
    reader.close()
    assert _batch_threads() == []
    for _ in reader.epoch(np.random.default_rng(0)):  # a closed reader starts again
        pass
    del reader
    assert _batch_threads() == []


def test_select_chunks_views_chunks_in_the_given_order():
    X = np.arange(40.0).reshape(20, 2)
    ds = bd.from_arrays(X, np.arange(20), chunk_rows=6)  # chunks of 6, 6, 6, 2 rows
    sub = ds.select_chunks([3, 1])
    assert (sub.n_chunks, sub.n_rows, sub.target) == (2, 8, "y")
    Xs, ys = sub.read_all()
    np.testing.assert_array_equal(ys, [18, 19, 6, 7, 8, 9, 10, 11])
    np.testing.assert_array_equal(Xs, X[ys])
    np.testing.assert_array_equal(sub.labels(), [6, 7, 8, 9, 10, 11, 18, 19])
    assert [c.start for c in sub.iter_chunks()] == [18, 6]  # rows keep their numbers (in errors too)
    assert sub.shard(1, 2).read_all()[1].tolist() == [6, 7, 8, 9, 10, 11]
    with pytest.raises(ValueError, match="outside"):
        ds.select_chunks([4])


def test_moments_in_a_model_dtype_report_a_value_too_large_for_it():
    X = np.ones((10, 2))
    X[7, 1] = 1e39
    ds = bd.from_arrays(X)
    assert np.isfinite(ds.stats()[0]).all()
    with pytest.raises(bd.DataError, match=r"X\[7, 1\]: 1e\+39 does not fit in float32; use dtype='float64' or "
                                           "scale your features"):
        ds.stats(np.float32)
