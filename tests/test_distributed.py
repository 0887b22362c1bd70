"""Data-parallel training (bp_gpu.distributed): in this process with a one-rank group, and as real
MPI jobs (``mpiexec -n 2`` and ``-n 3`` in subprocesses, each with a timeout; skipped where no
mpiexec is found). The jobs are tests/mpi_jobs/*.py; each batches several checks, since starting
one costs a few seconds."""

import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import bp_gpu
from bp_gpu.hyperparams import make_optimizer

pytest.importorskip("sklearn")  # MLPClassifier's conventions are tested with it elsewhere; keep one setup

PY = os.path.abspath(sys.executable)
JOBS = Path(__file__).resolve().parent / "mpi_jobs"
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None


def _find_mpiexec():
    here = Path(PY).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
needs_mpi4py = pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py is not installed (pip install 'bp_gpu[mpi]')")
needs_mpiexec = pytest.mark.skipif(
    MPIEXEC is None or not HAVE_MPI4PY, reason="no mpiexec or mpi4py here (pip install 'bp_gpu[mpi]')"
)
BASE = dict(hidden_layer_sizes=(7,), learning_rate=0.05, batch_size=8, epochs=3, dtype="float64", backend="cpu",
            random_state=3)


def _data(n=97, d=5, seed=0):
    """Three classes; class 2 lives only in the first 70 rows (rank 2 of the 3-way split lacks it)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    y[:70][X[:70, 2] > 1.0] = 2
    return X, y


def _weights(clf):
    return [a for pair in clf.net_.get_weights() for a in pair]


def _on(group, clf, monkeypatch):
    """``clf`` set to train data-parallel on ``group`` (a group of this process alone) in place of
    MPI.COMM_WORLD's."""
    from bp_gpu import distributed as D

    monkeypatch.setattr(D, "world_group", lambda: group)
    return clf.set_params(distributed=True)


# -- in this process ----------------------------------------------------------------------------------
def test_distributed_without_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    X, y = _data()
    with pytest.raises(ImportError, match=r"pip install 'bp_gpu\[mpi\]'"):
        bp_gpu.MLPClassifier(distributed=True, **BASE).fit(X, y)


def test_distributed_must_be_a_bool():
    X, y = _data()
    with pytest.raises(TypeError, match="distributed must be a bool"):
        bp_gpu.MLPClassifier(distributed="yes", **BASE).fit(X, y)


def test_batch_sizes_and_rank_generators():
    from bp_gpu.distributed import batch_sizes, rank_generator

    assert batch_sizes(40, 8) == [8] * 5 and batch_sizes(27, 8) == [8, 8, 8, 3] and batch_sizes(3, 8) == [3]
    g = np.random.default_rng(7)
    state = g.bit_generator.state
    r0, r1 = rank_generator(g, 0), rank_generator(g, 1)
    assert g.bit_generator.state == state  # not advanced
    assert (r0.permutation(50) == np.random.default_rng(7).permutation(50)).all()  # rank 0 = one process
    assert not (r1.permutation(50) == np.random.default_rng(7).permutation(50)).all()


@needs_mpi4py
def test_one_process_trains_as_without_distributed():
    X, y = _data()
    a = bp_gpu.MLPClassifier(**BASE).fit(X, y)
    b = bp_gpu.MLPClassifier(distributed=True, **BASE).fit(X, y)  # world size 1 here
    assert a.loss_curve_ == b.loss_curve_
    assert all((p == q).all() for p, q in zip(_weights(a), _weights(b)))


@needs_mpi4py
def test_one_rank_group_runs_the_data_parallel_path_bit_for_bit(tmp_path, monkeypatch):
    """Every collective of the data-parallel path on a one-rank group (MPI.COMM_SELF) must leave the
    numbers of plain training unchanged: fit with early stopping, save, load, resume."""
    from mpi4py import MPI

    from bp_gpu import distributed as D

    X, y = _data()
    params = dict(BASE, optimizer="adam", early_stopping=True, n_iter_no_change=2, epochs=6)
    group = D.ProcessGroup(MPI.COMM_SELF)
    plain = bp_gpu.MLPClassifier(**params).fit(X, y)
    dp = _on(group, bp_gpu.MLPClassifier(**params), monkeypatch).fit(X, y)
    assert dp._trained.group is group
    assert plain.loss_curve_ == dp.loss_curve_ and plain.validation_scores_ == dp.validation_scores_
    assert all((p == q).all() for p, q in zip(_weights(plain), _weights(dp)))

    dp.save(tmp_path / "m.npz")  # a local call; the model holds the generators gathered after each epoch
    loaded = bp_gpu.load(tmp_path / "m.npz")
    assert loaded._state.rank_rngs is not None and len(loaded._state.rank_rngs) == 1
    _on(group, loaded, monkeypatch).partial_fit(X, y, epochs=2)
    plain.partial_fit(X, y, epochs=2)
    assert loaded.loss_curve_ == plain.loss_curve_
    assert all((p == q).all() for p, q in zip(_weights(plain), _weights(loaded)))


@needs_mpi4py
def test_resuming_under_another_world_size_is_refused(tmp_path, monkeypatch):
    from mpi4py import MPI

    from bp_gpu import distributed as D

    X, y = _data()
    group = D.ProcessGroup(MPI.COMM_SELF)
    clf = _on(group, bp_gpu.MLPClassifier(**BASE), monkeypatch).fit(X, y)
    clf._state.rank_rngs = [D.rng_to_dict(clf._state.rng)] * 2  # as if saved by two processes
    clf.save(tmp_path / "two.npz")
    loaded = bp_gpu.load(tmp_path / "two.npz")
    weights = _weights(loaded)
    with pytest.raises(ValueError, match=r"rank 0 of 1: this model was trained by 2 process\(es\).*mpiexec -n 2"):
        _on(group, loaded, monkeypatch).partial_fit(X, y)
    assert all((p == q).all() for p, q in zip(weights, _weights(loaded)))
    assert loaded.n_iter_ == 3


@needs_mpi4py
def test_gpu_reducers_with_a_stand_in_for_cupy(monkeypatch):
    """The NCCL and staged-MPI reducers cannot run here; a stand-in CuPy (host arrays behind the
    calls they make) checks what they call and with what: ncclAllReduce in place on the flat buffer
    with its dtype and the current stream; the fallback's copy out, MPI sum, copy back; the
    fallback's one warning; finish() polling the event and NCCL's error state."""
    import types

    from mpi4py import MPI

    from bp_gpu import distributed as D

    calls = []

    class Buf:
        def __init__(self, a):
            self.a, self.shape, self.dtype, self.size, self.itemsize = a, a.shape, a.dtype, a.size, a.itemsize
            self.data = types.SimpleNamespace(ptr=1234)

        def get(self, stream=None, out=None):
            calls.append(("get", stream.ptr))
            out[...] = self.a
            return out

        def set(self, arr, stream=None):
            calls.append(("set", stream.ptr))
            self.a[...] = arr

    class Comm:
        def __init__(self, n, uid, rank):
            assert (n, len(uid), rank) == (1, 128, 0)

        def allReduce(self, *args):
            calls.append(("allReduce", *args))

        def check_async_error(self):
            calls.append(("check",))

    class Event:
        done = True

        def __init__(self, disable_timing):
            assert disable_timing

        def record(self, stream):
            calls.append(("record", stream.ptr))

    nccl = types.SimpleNamespace(available=True, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0, NcclCommunicator=Comm,
                                 get_unique_id=lambda: bytes(128))
    cuda = types.SimpleNamespace(get_current_stream=lambda: types.SimpleNamespace(ptr=77), Event=Event, nccl=nccl)
    cupy = types.SimpleNamespace(cuda=cuda)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(empty_pinned=np.empty))
    group = D.ProcessGroup(MPI.COMM_SELF)
    grads = np.arange(5.0)
    engine = types.SimpleNamespace(xp=cupy, grads=Buf(grads))

    r = D.make_reducer(group, engine)
    assert r.kind == "nccl"
    r()
    r.finish()
    assert calls == [("allReduce", 1234, 1234, 5, 8, 0, 77), ("record", 77), ("check",)]

    calls.clear()
    nccl.available = False
    with pytest.warns(RuntimeWarning, match="CuPy has no NCCL"):
        r = D.make_reducer(group, engine)
    assert r.kind == "mpi-staged"
    r()
    assert calls == [("get", 77), ("set", 77)] and (grads == np.arange(5.0)).all()  # one rank: the sum is itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.make_reducer(group, engine)  # said once per group


@needs_mpi4py
def test_resuming_after_single_process_training_is_refused(tmp_path, monkeypatch):
    """A data-parallel file trained further by one process holds stale per-process generators."""
    from mpi4py import MPI

    from bp_gpu import distributed as D

    X, y = _data()
    group = D.ProcessGroup(MPI.COMM_SELF)
    _on(group, bp_gpu.MLPClassifier(**BASE), monkeypatch).fit(X, y).save(tmp_path / "m.npz")
    loaded = bp_gpu.load(tmp_path / "m.npz")
    loaded.set_params(distributed=False).partial_fit(X, y)  # plain training
    with pytest.raises(ValueError, match="trained further by a single process"):
        _on(group, loaded, monkeypatch).partial_fit(X, y)


# -- MPI jobs ------------------------------------------------------------------------------------------
def _proxies() -> set[int]:
    """PIDs of MPICH's per-node proxies now running (an orphan would outlive its mpiexec)."""
    pids = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"hydra_pmi_proxy" in (p / "cmdline").read_bytes():
                    pids.add(int(p.name))
            except OSError:
                pass
    return pids


def _processes_with(marker: str) -> set[int]:
    pids = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    pids.add(int(p.name))
            except OSError:
                pass
    return pids


def _assert_no_orphans(marker: str, proxies_before: set[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = _processes_with(marker) | (_proxies() - proxies_before)
        if not left:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes left behind by the MPI job: {sorted(left)}")


def _start(n, args, env=None):
    return subprocess.Popen([MPIEXEC, "-n", str(n), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, start_new_session=True)


def _finish(proc, timeout):
    """(returncode, stdout, stderr, seconds); on timeout the whole job is killed and the test fails."""
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the MPI job did not end within {timeout} s:\n{out}\n{err}") from None
    return proc.returncode, out, err, time.monotonic() - t0


def _job(n, script, *args, env=None, timeout=180):
    proxies = _proxies()
    rc, out, err, _ = _finish(_start(n, [PY, "-m", "mpi4py", str(JOBS / script), *map(str, args)], env), timeout)
    assert rc == 0, f"mpiexec -n {n} {script} exited with {rc}:\n{out}\n{err[-4000:]}"
    _assert_no_orphans(str(args[0]), proxies)
    return out, err


def _write_parquet(path, X, y, bounds):
    """X, y as a Parquet file with columns f0.., label and one row group per rank's bounds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {f"f{j}": X[:, j] for j in range(X.shape[1])} | {"label": y}
    with pq.ParquetWriter(path, pa.table(cols).schema) as w:
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            w.write_table(pa.table({k: v[lo:hi] for k, v in cols.items()}))


def _union_reference(X, y, bounds, name, extra, epochs):
    """One process stepping on the union of every rank's batch at each step (the ranks' batch orders
    drawn as the data-parallel run draws them)."""
    from bp_gpu.distributed import rank_generator
    from bp_gpu.hyperparams import checked
    from bp_gpu.labels import LabelEncoder, check_labels, join_labels
    from bp_gpu.pipeline import fresh

    clf = bp_gpu.MLPClassifier(optimizer=name, **{**BASE, **extra, "epochs": epochs})
    p = checked(clf.get_params())
    T = LabelEncoder(*join_labels([check_labels(y, len(y))[1]]), np.float64)(y)
    net, state, _ = fresh(p, np.random.SeedSequence(BASE["random_state"]), X.shape[1], T.shape[1])
    world = len(bounds) - 1
    rngs = [rank_generator(state.rng, r) for r in range(world)]
    opt = make_optimizer(name, net, p["learning_rate"], p["momentum"], p["weight_decay"])
    B, losses = BASE["batch_size"], []
    for _ in range(epochs):
        orders = [bounds[r] + rngs[r].permutation(bounds[r + 1] - bounds[r]) for r in range(world)]
        total = 0.0
        for k in range(max(-(-len(o) // B) for o in orders)):
            rows = np.concatenate([o[k * B:(k + 1) * B] for o in orders])
            total += float(net.train_step(X[rows], T[rows], opt)) * len(rows)
        losses.append(total / len(X))
    return [a for pair in net.get_weights() for a in pair], losses


def _ranks(out, n):
    nums = [dict(np.load(out / f"rank{r}.npz")) for r in range(n)]
    msgs = [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]
    return nums, msgs


OPTIMIZERS = {"sgd": {}, "momentum": {}, "adam": {}, "adamw": {"weight_decay": 0.1}, "lamb": {"weight_decay": 0.1}}


@needs_mpiexec
@pytest.mark.parametrize("n, bounds, mode", [(2, [0, 50, 97], "quick"), (3, [0, 40, 70, 97], "full")])
def test_shards_equal_one_process_on_the_union_of_their_batches(tmp_path, n, bounds, mode):
    """Ragged shards (40/30/27 rows; 50/47) and ragged last batches (batch 8): the ranks take 5, 4 and 4
    steps, the short ones join the last all-reduce with empty batches. Weights after 3 epochs within
    1e-10 of one process on the union, identical on every rank; loss_curve_, classes_ (the union:
    rank 2 has no class 2), predictions the same everywhere."""
    X, y = _data()
    np.savez(tmp_path / "data.npz", X=X, y=y, bounds=np.array(bounds))
    _write_parquet(tmp_path / "data.parquet", X, y, bounds)
    _job(n, "train_checks.py", tmp_path, mode)
    nums, msgs = _ranks(tmp_path, n)
    # A data set's shards, standardised with every rank's rows: the global statistics, the file's
    # column names, and the same steps as one process on the union of the standardised rows.
    mean, std = X.mean(axis=0), X.std(axis=0)
    want, _ = _union_reference((X - mean) / std, y, bounds, "adam", {}, 3)
    for r in range(n):
        np.testing.assert_allclose(nums[r]["dataset/mean"], mean, rtol=1e-13)
        np.testing.assert_allclose(nums[r]["dataset/std"], std, rtol=1e-13)
        assert msgs[r]["dataset/names"] == [f"f{j}" for j in range(X.shape[1])]
        got = [nums[r][f"dataset/{k}{l}"] for l in range(2) for k in ("W", "b")]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11, err_msg=f"data set, rank {r}")
    names = ["sgd", "momentum", "adam"] if mode == "quick" else list(OPTIMIZERS)
    for name in names:
        want, losses = _union_reference(X, y, bounds, name, OPTIMIZERS[name], 3)
        for r in range(n):
            got = [nums[r][f"{name}/{k}{l}"] for l in range(2) for k in ("W", "b")]
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=f"{name}, rank {r}")
            for key in ("W0", "b0", "W1", "b1", "loss", "n_iter", "classes", "predict"):
                assert (nums[r][f"{name}/{key}"] == nums[0][f"{name}/{key}"]).all(), f"{name}/{key} rank {r}"
        np.testing.assert_allclose(nums[0][f"{name}/loss"], losses, rtol=1e-12)
        assert nums[0][f"{name}/classes"].tolist() == [0, 1, 2]
    if mode == "quick":
        return

    # Early stopping: the same validation scores and stopping epoch on every rank, before the limit.
    for r in range(n):
        for key in ("validation_scores", "n_iter", "W0", "W1"):
            assert (nums[r][f"early/{key}"] == nums[0][f"early/{key}"]).all()
    assert nums[0]["early/n_iter"] < 60

    # Save, load, resume: 2 + 2 epochs equal 4 epochs, bit for bit, on every rank.
    for r in range(n):
        for key in ("W0", "b0", "W1", "b1", "loss"):
            assert (nums[r][f"resumed/{key}"] == nums[r][f"whole/{key}"]).all(), f"resumed/{key} rank {r}"
    saved = bp_gpu.load(tmp_path / "resumed.npz")
    assert saved.n_iter_ == 4 and len(saved._state.rank_rngs) == 3
    assert all((a == b).all() for a, b in zip(_weights(saved), [nums[0][f"resumed/{k}{l}"]
                                                               for l in range(2) for k in ("W", "b")]))

    # partial_fit from scratch (classes given) is fit.
    for r in range(n):
        for key in ("W0", "b0", "W1", "b1", "loss", "classes"):
            assert (nums[r][f"partial/{key}"] == nums[r][f"adam/{key}"]).all(), f"partial/{key} rank {r}"

    # Bad input on one rank: every rank raises the same error, naming the rank and the row.
    expect = {
        "nan": "ValueError: rank 1 of 3: X[5, 2] is NaN",
        "label": "ValueError: rank 2 of 3: Unknown label type: continuous (y[3] = 0.5)",
        "columns": "ValueError: rank 1 of 3: X has 4 features but rank 0's X has 5",
        "empty": "ValueError: rank 2 of 3: X is empty: it has 0 samples",
        "params": "ValueError: rank 2 of 3: hyperparameters differ from rank 0's: batch_size=9 (rank 0: 8)",
        "refit": "ValueError: rank 1 of 3: X[5, 2] is NaN",
        "diverge": "TrainingDivergedError: training diverged: the mean loss of epoch 1 is",  # the global loss
    }
    for case, start in expect.items():
        assert all(m[case] == msgs[0][case] for m in msgs), [m[case] for m in msgs]
        assert msgs[0][case].startswith(start), msgs[0][case]
    assert all(m["refit_unchanged"] == "True" for m in msgs)  # the fitted model stayed as it was


@needs_mpiexec
@pytest.mark.parametrize("mode", ["raise", "kill", "hang", "uncaught"])
def test_a_failing_rank_ends_the_job(tmp_path, mode):
    """Rank 1 raises, is killed, or hangs at the end of epoch 2, or raises outside fit while rank 0
    trains (a plain script, not python -m mpi4py): mpiexec ends with a non-zero status within 30 s
    and no process is left behind."""
    proxies = _proxies()
    env = {"BP_GPU_COLLECTIVE_TIMEOUT": "2"} if mode == "hang" else {}
    proc = _start(2, [PY, str(JOBS / "faults.py"), str(tmp_path), mode], env)
    rc, out, err, seconds = _finish(proc, timeout=30)
    assert rc != 0 and "finished" not in out, (rc, out, err)
    if mode in ("raise", "uncaught"):
        assert "rank 1 fails on purpose" in err
    if mode == "hang":
        assert "did not complete within 2 s" in err
    _assert_no_orphans(str(tmp_path), proxies)


@needs_mpiexec
def test_ctrl_c_ends_the_job_and_keeps_the_last_checkpoint(tmp_path):
    proxies = _proxies()
    proc = _start(2, [PY, str(JOBS / "faults.py"), str(tmp_path), "interrupt"])
    deadline = time.monotonic() + 120
    while not (tmp_path / "checkpointed").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no checkpoint was written: {proc.communicate()}")
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # to mpiexec, which forwards it to every rank
    rc, out, err, _ = _finish(proc, timeout=30)
    assert rc != 0 and "finished" not in out, (rc, out, err)
    model = bp_gpu.load(tmp_path / "checkpoint.npz")
    assert model.n_iter_ >= 1 and len(model._state.rank_rngs) == 2
    _assert_no_orphans(str(tmp_path), proxies)


@needs_mpiexec
def test_saving_is_local_on_any_rank_and_every_rank_writes_the_same_bytes(tmp_path):
    """``if rank == 0: clf.save(path)`` (DDP's and Horovod's idiom), a non-zero rank alone, and every
    rank at once to one shared path: nothing waits on the other processes, every file is the same
    bytes, and the file rank 1 wrote alone resumes the 2-process job exactly (2 + 2 epochs = 4)."""
    _job(2, "save_checks.py", tmp_path, timeout=120)
    files = ["by_rank0.npz", "by_rank1.npz", "shared.npz", "own0.npz", "own1.npz"]
    first = (tmp_path / files[0]).read_bytes()
    for f in files[1:]:
        assert (tmp_path / f).read_bytes() == first, f
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    model = bp_gpu.load(tmp_path / "shared.npz")
    assert model.n_iter_ == 2 and len(model._state.rank_rngs) == 2
    for r in range(2):
        got = dict(np.load(tmp_path / f"rank{r}.npz"))
        assert (got["resumed_loss"] == got["whole_loss"]).all()
        for k in range(4):
            assert (got[f"resumed{k}"] == got[f"whole{k}"]).all(), (r, k)


@needs_mpiexec
def test_one_process_under_mpiexec_with_distributed_equals_plain_training(tmp_path):
    """A world of one process is a group of one: arrays with early stopping and standardisation, a
    streamed data set, partial_fit, save and resume give plain training's numbers bit for bit."""
    _job(1, "one_process.py", tmp_path, timeout=120)
    r = subprocess.run([PY, str(JOBS / "one_process.py"), str(tmp_path), "plain"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    for case in ("early", "dataset", "resumed"):
        dp, plain = dict(np.load(tmp_path / f"{case}_dp.npz")), dict(np.load(tmp_path / f"{case}_plain.npz"))
        assert dp.keys() == plain.keys()
        for k in dp:
            assert (dp[k] == plain[k]).all(), (case, k)


@needs_mpiexec
def test_cli_trains_on_its_shards_and_resumes(tmp_path):
    """bp-gpu train --distributed: each process reads its rows of a .npy (and of a CSV); rank 0
    alone prints; 2 + 2 epochs resumed equal 4 epochs; a bad row is reported once, with the rank."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(301, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(float)
    np.save(tmp_path / "d.npy", np.column_stack([X, y]))
    with open(tmp_path / "d.csv", "w") as f:
        f.write("a,b,c,d,label\n")
        for row, t in zip(X, y):
            f.write(",".join(str(float(v)) for v in row) + f",{['no', 'yes'][int(t)]}\n")
    bad = np.column_stack([X, y])
    bad[250, 2] = np.nan  # row 250 is rank 1's row 100 of 2
    np.save(tmp_path / "bad.npy", bad)
    common = ["--hidden", "8", "--batch-size", "16", "--learning-rate", "0.05", "--backend", "cpu", "--distributed"]
    cli = [PY, "-m", "bp_gpu.cli", "train"]

    def run(*args):
        proxies = _proxies()
        rc, out, err, _ = _finish(_start(2, [*cli, *map(str, args)]), timeout=180)
        _assert_no_orphans(str(tmp_path), proxies)
        return rc, out, err

    rc, out, err = run(tmp_path / "d.npy", "--target", 4, "--epochs", 4, "--out", tmp_path / "whole.npz", *common)
    assert rc == 0, err
    assert out.count("trained 4 epoch(s)") == 1 and "on 2 process(es)" in out, out
    # Rank 0's start line, and (stderr is a pipe here, as under any mpiexec) a line per epoch.
    assert out.count("training on 301 rows, 4 features of") == 1 and "data-parallel on 2 processes" in out, out
    assert [line.split(":")[0] for line in err.splitlines() if line.startswith("epoch ")] == \
        [f"epoch {k}/4" for k in range(1, 5)], err
    rc, out, err = run(tmp_path / "d.npy", "--target", 4, "--epochs", 2, "--out", tmp_path / "half.npz",
                       "--checkpoint-every", 1, *common)
    assert rc == 0, err
    rc, out, err = run(tmp_path / "d.npy", "--target", 4, "--epochs", 4, "--out", tmp_path / "half.npz",
                       "--resume", tmp_path / "half.npz", *common)
    assert rc == 0, err
    whole, resumed = bp_gpu.load(tmp_path / "whole.npz"), bp_gpu.load(tmp_path / "half.npz")
    assert whole.loss_curve_ == resumed.loss_curve_
    assert all((a == b).all() for a, b in zip(_weights(whole), _weights(resumed)))

    rc, out, err = run(tmp_path / "d.csv", "--target", "label", "--epochs", 2, "--out", tmp_path / "c.npz", *common)
    assert rc == 0, err
    assert list(bp_gpu.load(tmp_path / "c.npz").classes_) == ["no", "yes"]
    # Resuming a model fitted on a CSV's named columns: the file's names are checked, no warning.
    rc, out, err = run(tmp_path / "d.csv", "--target", "label", "--epochs", 3, "--out", tmp_path / "c.npz",
                       "--resume", tmp_path / "c.npz", *common)
    assert rc == 0 and "Warning" not in err, err
    assert bp_gpu.load(tmp_path / "c.npz").n_iter_ == 3

    # mpiexec without --distributed: every process would train alone and write --out; said once.
    rc, out, err = run(tmp_path / "d.npy", "--target", 4, "--epochs", 1, "--out", tmp_path / "alone.npz",
                       *common[:-1])
    assert rc == 0 and err.count("--distributed is not given") == 1, err

    rc, out, err = run(tmp_path / "bad.npy", "--target", 4, "--epochs", 2, "--out", tmp_path / "b.npz", *common)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1, err
    assert lines[0].startswith("bp-gpu train: error: rank 1 of 2: ") and "row 250" in lines[0], lines[0]


@needs_mpiexec
def test_cli_ctrl_c_saves_the_last_completed_epoch(tmp_path):
    """Ctrl-C under mpiexec (which forwards it to every process) does what it does to one process:
    rank 0 keeps the last completed epoch, saves it to --out, and the job ends (non-zero) within
    seconds, no process left behind; the file resumes under the same number of processes."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40_000, 16))
    np.save(tmp_path / "big.npy", np.column_stack([X, X[:, 0] > 0]))
    out = tmp_path / "m.npz"
    proxies = _proxies()
    proc = _start(2, [PY, "-m", "bp_gpu.cli", "train", str(tmp_path / "big.npy"), "--target", "16", "--hidden",
                      "256,256", "--epochs", "1000", "--backend", "cpu", "--distributed", "--out", str(out)])
    lines, deadline = [], time.monotonic() + 120
    while not any(line.startswith("epoch 1/") for line in lines):
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            lines.append(proc.stderr.readline())
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no epoch line within 120 s: {lines} {proc.communicate()}")
    proc.send_signal(signal.SIGINT)
    rc, stdout, err, seconds = _finish(proc, timeout=60)
    assert rc != 0 and "the last completed epoch (" in err and f"is saved in {out}" in err, (rc, stdout, err)
    assert f"saved {out}" in stdout
    model = bp_gpu.load(out)
    assert model.n_iter_ >= 1 and len(model._state.rank_rngs) == 2
    _assert_no_orphans(str(tmp_path), proxies)


@needs_mpiexec
def test_bench_ranks_runs(tmp_path):
    """bp-gpu bench --ranks (bench/scaling.py) end to end on the tiny workload; no timing asserted."""
    r = subprocess.run([PY, "-m", "bp_gpu.cli", "bench", "--ranks", "1,2", "--threads", "2", "--quick", "--repeats",
                        "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert [(q["ranks"], q["threads_per_rank"]) for q in rows] == [(1, 2), (2, 1)]
    assert all(q["steps"] == 16 and q["samples_per_s"] > 0 and 0 <= q["allreduce_share"] <= 1 for q in rows)


@needs_mpiexec
def test_readme_script_runs_under_mpiexec(tmp_path):
    """The README's data-parallel script, as written, on a Parquet file, with 2 processes."""
    import re

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    body = readme[readme.index("<!-- section:distributed -->"):readme.index("<!-- /section:distributed -->")]
    (tmp_path / "train.py").write_text(re.search(r"```python\n(.*?)```", body, re.S).group(1))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": (X[:, 0] > 0).astype(int)}),
                   tmp_path / "data.parquet", row_group_size=50)
    proxies = _proxies()
    proc = subprocess.Popen([MPIEXEC, "-n", "2", PY, "-m", "mpi4py", str(tmp_path / "train.py")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    rc, out, err, _ = _finish(proc, timeout=180)
    assert rc == 0, err
    model = bp_gpu.load(tmp_path / "model.npz")
    assert model.n_iter_ == 20 and len(model._state.rank_rngs) == 2
    _assert_no_orphans(str(tmp_path), proxies)
