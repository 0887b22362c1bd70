"""`bp-gpu demo`, `train`, `predict`, run as a user runs them (subprocess) on small files."""

import csv
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import bp_gpu

pytest.importorskip("sklearn")  # the demo's datasets and baselines


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "bp_gpu.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r


def _one_line_error(r, *fragments):
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A separable two-class problem with string labels, as CSV (header), .npy and .npz."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    with open(d / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f1", "label", "f2", "f3"])
        for row, t in zip(X, y):
            w.writerow([row[0], ["no", "yes"][t], row[1], row[2]])
    np.save(d / "train.npy", np.column_stack([X, y]))
    np.savez(d / "train.npz", X=X, y=y)
    return d, X, y


def test_a_finished_command_ends_with_its_status_without_the_interpreters_teardown():
    # Native teardown at exit (pyarrow's CPU thread pool: apache/arrow#34314) once turned a finished
    # `bp-gpu train` into SIGABRT. The command's process ends after its output is flushed: nothing
    # registered to run at exit runs, and stdout is complete.
    code = ("import atexit, sys; atexit.register(print, 'teardown ran'); sys.argv = ['bp-gpu', 'info']; "
            "import bp_gpu.cli; bp_gpu.cli.run()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("bp_gpu ") and "backends available:" in r.stdout and "teardown ran" not in r.stdout


def test_a_closed_pipe_on_stdout_ends_the_command_quietly():
    # `bp-gpu info | head -1`: the reader goes away; no "error: Broken pipe", the shell's status.
    proc = subprocess.Popen([sys.executable, "-m", "bp_gpu.cli", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command has written anything
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == "", (proc.returncode, err)


def test_help_everywhere():
    for cmd in ("demo", "train", "predict"):
        r = _ok(cli(cmd, "--help"))
        assert r.stdout.startswith(f"usage: bp-gpu {cmd}")


def test_demo_prints_accuracy_baselines_backend_and_writes_png(tmp_path):
    r = _ok(cli("demo", "--epochs", 3, "--backend", "cpu", "--plot", tmp_path / "c.png"))
    out = r.stdout
    for text in (
        "breast_cancer",
        "test accuracy:",
        "bp_gpu MLP",
        "logistic regression",
        "majority class",
        "backend: cpu (Numba-compiled steps, matrix products on NumPy's BLAS)",
        "samples/s",
        f"training curves: {tmp_path / 'c.png'}",
    ):
        assert text in out, out
    acc = float(next(line for line in out.splitlines() if "bp_gpu MLP" in line).split()[-1])
    assert acc > 0.85
    assert r.stderr == ""  # not a terminal: no progress bar
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_then_predict_csv(tmp_path, table):
    d, X, y = table
    r = _ok(
        cli(
            "train",
            d / "train.csv",
            "--target",
            "label",
            "--hidden",
            "8",
            "--epochs",
            20,
            "--batch-size",
            16,
            "--learning-rate",
            0.1,
            "--backend",
            "cpu",
            "--out",
            tmp_path / "m.npz",
            "--plot",
            tmp_path / "curves.png",
        )
    )
    assert "trained 20 epoch(s)" in r.stdout and f"saved {tmp_path / 'm.npz'}" in r.stdout
    assert (tmp_path / "curves.png").exists()
    model = bp_gpu.load(tmp_path / "m.npz")
    assert list(model.classes_) == ["no", "yes"] and model.n_iter_ == 20

    r = _ok(
        cli(
            "predict",
            tmp_path / "m.npz",
            d / "train.csv",
            "--target",
            "label",
            "--proba",
            "--out",
            tmp_path / "p.csv",
        )
    )
    acc = float(r.stderr.split()[1])
    assert r.stderr.startswith("accuracy ") and acc > 0.9
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0] == ["prediction", "proba_no", "proba_yes"] and len(rows) == 91
    expect = model.predict(X)
    assert [row[0] for row in rows[1:]] == list(expect)
    np.testing.assert_allclose(
        [[float(v) for v in row[1:]] for row in rows[1:]], model.predict_proba(X)
    )

    _one_line_error(
        cli("predict", tmp_path / "m.npz", d / "train.npy"),
        "has 4 feature columns but the model "
        "expects 3; if one column is the label, name it with --target",
    )


def test_train_npy_and_npz_predict_to_stdout(tmp_path, table):
    d, X, y = table
    common = ["--hidden", "none", "--epochs", 5, "--backend", "cpu", "--quiet"]
    _ok(cli("train", d / "train.npy", "--target", -1, "--out", tmp_path / "a.npz", *common))
    _ok(cli("train", d / "train.npz", "--target", "y", "--out", tmp_path / "b.npz", *common))
    a, b = bp_gpu.load(tmp_path / "a.npz"), bp_gpu.load(tmp_path / "b.npz")
    assert a.net_.layer_sizes == (3, 1) and list(a.classes_) == [0, 1]
    np.testing.assert_array_equal(
        a.net_.get_weights()[0][0], b.net_.get_weights()[0][0]
    )  # same data, seed
    r = _ok(cli("predict", tmp_path / "b.npz", d / "train.npz"))
    lines = r.stdout.splitlines()
    assert lines[0] == "prediction" and [int(v) for v in lines[1:]] == list(b.predict(X))


def test_resume_from_checkpoint_equals_one_run(tmp_path, table):
    d = table[0]
    common = [
        "--target",
        "label",
        "--hidden",
        "5",
        "--batch-size",
        16,
        "--backend",
        "cpu",
        "--optimizer",
        "momentum",
    ]
    _ok(cli("train", d / "train.csv", *common, "--epochs", 4, "--out", tmp_path / "full.npz"))
    _ok(
        cli(
            "train",
            d / "train.csv",
            *common,
            "--epochs",
            2,
            "--checkpoint-every",
            1,
            "--out",
            tmp_path / "ck.npz",
        )
    )
    r = _ok(
        cli(
            "train",
            d / "train.csv",
            "--target",
            "label",
            "--resume",
            tmp_path / "ck.npz",
            "--epochs",
            4,
            "--out",
            tmp_path / "ck.npz",
        )
    )
    assert "trained 2 epoch(s) (4 in total)" in r.stdout
    full, resumed = bp_gpu.load(tmp_path / "full.npz"), bp_gpu.load(tmp_path / "ck.npz")
    for (W1, b1), (W2, b2) in zip(full.net_.get_weights(), resumed.net_.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert full.loss_curve_ == resumed.loss_curve_
    _one_line_error(
        cli(
            "train",
            d / "train.csv",
            "--target",
            "label",
            "--resume",
            tmp_path / "ck.npz",
            "--epochs",
            4,
        ),
        "already trained 4 epochs",
    )


def test_checkpoints_are_written_as_training_goes(tmp_path, table):
    from bp_gpu import MLPClassifier
    from bp_gpu.cli._progress import ProgressMonitor

    _, X, y = table
    saved = []

    class Spy(ProgressMonitor):
        def on_epoch(self, info):
            super().on_epoch(info)
            if (tmp_path / "ck.npz").exists():
                saved.append(bp_gpu.load(tmp_path / "ck.npz").n_iter_)

    mon = Spy(len(X), 5, quiet=True, checkpoint=(str(tmp_path / "ck.npz"), 2))
    MLPClassifier((4,), epochs=5, backend="cpu", random_state=0).fit(X, y, monitor=mon)
    assert mon.checkpoints_written == 2 and saved == [2, 2, 4, 4]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (
            ["train", "nope.csv", "--target", "y"],
            ["bp-gpu train: error:", "nope.csv: no such file"],
        ),
        (["train", "{d}/train.csv", "--target", "colour"], ["no column named 'colour'"]),
        (["train", "{d}/train.npz", "--target", "label"], ["no array named 'label'"]),
        (
            ["predict", "{d}/train.csv", "{d}/train.csv"],
            ["bp-gpu predict: error:", "not a bp_gpu model file"],
        ),
    ],
)
def test_errors_are_one_line(table, args, fragments):
    d = table[0]
    _one_line_error(cli(*[a.format(d=d) for a in args]), *fragments)


def test_non_numeric_feature_is_located(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,x\n3,oops,y\n")
    _one_line_error(
        cli("train", tmp_path / "bad.csv", "--target", "label"),
        "line 3, column 'b': 'oops' is not a number",
    )


def test_bad_option_values_are_usage_errors(table):
    r = cli("train", table[0] / "train.csv", "--target", "label", "--hidden", "64,x")
    assert r.returncode == 2 and "expected comma-separated layer widths" in r.stderr


def test_ctrl_c_before_the_first_epoch_leaves_out_as_it_was(tmp_path):
    # A real SIGINT to a run whose first epoch takes seconds (50,000 rows through 2048 x 2048).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50_000, 20)).astype(np.float32)
    np.savez(tmp_path / "big.npz", X=X, y=(X[:, 0] > 0).astype(int))
    keep = tmp_path / "keep.npz"
    bp_gpu.MLPClassifier((3,), epochs=1, backend="cpu", random_state=0).fit(X[:50], X[:50, 0] > 0).save(keep)
    before, inode = keep.read_bytes(), keep.stat().st_ino
    proc = subprocess.Popen(
        [sys.executable, "-m", "bp_gpu.cli", "train", tmp_path / "big.npz", "--target", "y", "--hidden",
         "2048,2048", "--epochs", "100", "--backend", "cpu", "--out", keep],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # SIGINT as at a terminal, even where this test runs with it ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "no start line within 120 s"
        line = proc.stdout.readline()
        assert line.startswith("training on 50000 rows"), line  # past the imports and the data
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == f"bp-gpu train: interrupted before the first epoch completed; {keep} was left as it was"
    assert "Traceback" not in err and "saved" not in out
    assert keep.read_bytes() == before and keep.stat().st_ino == inode
    assert sorted(os.listdir(tmp_path)) == ["big.npz", "keep.npz"]


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_unwritable_targets_are_found_before_training(tmp_path, table, option):
    bad = tmp_path / "no" / "such" / ("m.npz" if option == "--out" else "c.png")
    args = ["train", table[0] / "train.csv", "--target", "label", "--epochs", 3, "--backend", "cpu",
            "--checkpoint-every", 1, option, bad]
    if option == "--plot":
        args += ["--out", tmp_path / "m.npz"]
    r = cli(*args)
    _one_line_error(r, f"bp-gpu train: error: cannot write {bad}: the directory {bad.parent} does not exist")
    assert r.stdout == "" and os.listdir(tmp_path) == []  # nothing trained, nothing written


def test_demo_prints_the_batch_size_in_use(tmp_path):
    r = _ok(cli("demo", "--epochs", 1, "--batch-size", 100_000, "--backend", "cpu", "--no-plot"))
    assert ", batch 426 (all 426 training rows), " in r.stdout, r.stdout


def test_resume_refuses_options_that_contradict_the_saved_model(tmp_path, table):
    d = table[0]
    common = ["--target", "label", "--backend", "cpu", "--quiet"]
    _ok(cli("train", d / "train.csv", *common, "--hidden", "5", "--optimizer", "momentum", "--epochs", 2,
            "--out", tmp_path / "m.npz"))
    before = (tmp_path / "m.npz").read_bytes()
    r = cli("train", d / "train.csv", *common, "--resume", tmp_path / "m.npz", "--epochs", 4, "--out",
            tmp_path / "m.npz", "--hidden", "32", "--optimizer", "adam", "--seed", "0", "--dtype", "float64")
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.strip() == (
        f"bp-gpu train: error: --resume {tmp_path / 'm.npz'} continues the saved model, and these options "
        "contradict it: --hidden 32 (the model has 5), --optimizer adam (the model has momentum), "
        "--dtype float64 (the model has float32); drop them, or train a new model without --resume"
    )
    r = cli("train", d / "train.csv", *common, "--resume", tmp_path / "m.npz", "--epochs", 4, "--early-stopping")
    assert r.returncode == 2 and "--early-stopping cannot be used with --resume" in r.stderr
    assert (tmp_path / "m.npz").read_bytes() == before


def test_resume_applies_the_options_that_may_change(tmp_path, table):
    d = table[0]
    common = ["--target", "label", "--backend", "cpu", "--quiet", "--hidden", "5", "--optimizer", "momentum"]
    _ok(cli("train", d / "train.csv", *common, "--epochs", 2, "--out", tmp_path / "m.npz"))
    # The same architecture options again are no contradiction; the rate, batch size and decay apply.
    r = _ok(cli("train", d / "train.csv", *common, "--resume", tmp_path / "m.npz", "--epochs", 3,
                "--learning-rate", 0.05, "--batch-size", 8, "--weight-decay", 0.001, "--out", tmp_path / "r.npz"))
    assert ("resuming with --learning-rate 0.05, --batch-size 8, --weight-decay 0.001, --backend cpu (the rest "
            f"as saved in {tmp_path / 'm.npz'})") in r.stdout
    resumed = bp_gpu.load(tmp_path / "r.npz")
    assert (resumed.learning_rate, resumed.batch_size, resumed.weight_decay) == (0.05, 8, 0.001)
    assert resumed.n_iter_ == 3 and resumed._optimizer.learning_rate.peak == 0.05
    assert resumed.epochs == 3  # the total it was trained to, not the first run's 2


@pytest.mark.parametrize("env, warned", [({"PMI_SIZE": "2", "PMI_RANK": "0"}, True),
                                         ({"PMI_SIZE": "2", "PMI_RANK": "1"}, False),
                                         ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0"}, True),
                                         ({"PMI_SIZE": "1", "PMI_RANK": "0"}, False)])
def test_a_launcher_world_without_distributed_is_warned_about_once(tmp_path, capsys, monkeypatch, env, warned):
    """mpiexec -n N bp-gpu train without --distributed trains N models that all write --out: the
    first process says so (the launchers' variables tell, without starting MPI)."""
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE",
                 "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    np.save(tmp_path / "d.npy", np.column_stack([X, X[:, 0] > 0]))
    from bp_gpu.cli import main

    assert main(["train", str(tmp_path / "d.npy"), "--target", "3", "--epochs", "1", "--hidden", "none",
                 "--backend", "cpu", "--quiet", "--out", str(tmp_path / "m.npz")]) == 0
    err = capsys.readouterr().err
    assert ("--distributed is not given" in err) == warned, err
