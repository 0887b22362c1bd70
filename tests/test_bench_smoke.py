"""The benchmark harness end to end on the tiny 'quick' workload. No timing is asserted: this
checks that ``bp-gpu bench`` runs, that peers agree on the epoch loss (they train the same
network from the same weights on the same batches), that unusable peers are skipped with a
reason, and that the table, JSON and PNG are written."""

import json
import subprocess
import sys
from pathlib import Path

from bp_gpu.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_runs_and_peers_agree(tmp_path, capsys):
    out = tmp_path / "bench"
    peers = "bp_gpu-cpu,numpy,sklearn,torch-eager-cuda"
    assert main(["bench", "--quick", "--repeats", "2", "--peers", peers, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bias_sigmoid_forward" in text and "GEMM ceiling" in text  # microbenchmarks ran
    assert "skip torch-eager-cuda:" in text  # never usable here (no CUDA device), said why
    res = json.loads((out / "results.json").read_text())
    rows = {r["peer"]: r for r in res["rows"]}
    for p in ("bp_gpu-cpu", "numpy", "sklearn"):
        assert rows[p]["median_s"] > 0 and len(rows[p]["times"]) == 2, rows[p]
        assert p in text
    # Same weights, data and batch order: the epoch losses agree to float32 rounding.
    ref = rows["numpy"]["loss"]
    for p in ("bp_gpu-cpu", "sklearn"):
        assert abs(rows[p]["loss"] - ref) < 1e-5 * abs(ref), (p, rows[p]["loss"], ref)
    assert rows["bp_gpu-cpu"]["epoch_extra_mb"] is not None
    assert (out / "ratios.png").stat().st_size > 1000
    assert (out / "micro.json").exists()


def test_bench_runs_as_a_plain_script(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--repeats", "1",
         "--peers", "numpy", "--no-micro", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "quick    numpy" in proc.stdout


def test_bench_rejects_unknown_names(tmp_path, capsys):
    assert main(["bench", "--quick", "--peers", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown peer(s) nope" in capsys.readouterr().err


def test_bench_workers_import_the_installed_package_from_any_folder(tmp_path):
    # The parent of a clone named bp_gpu: `python -m` in the folder would import the clone's root
    # (a namespace package with no MLP) instead of the installed bp_gpu.
    (tmp_path / "bp_gpu").symlink_to(ROOT, target_is_directory=True)
    cli = Path(sys.executable).with_name("bp-gpu")  # the installed command, not the folder's package
    proc = subprocess.run([str(cli), "bench", "--quick", "--repeats", "1", "--peers", "bp_gpu-cpu", "--no-micro",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "quick repeat 1/1 bp_gpu-cpu: failed" not in proc.stdout and "quick    bp_gpu-cpu " in proc.stdout


def test_a_failed_peer_fails_the_bench(tmp_path, capsys, monkeypatch):
    from bp_gpu.bench import harness

    real = harness._run_json

    def numpy_fails(cmd, env, timeout):
        if "numpy" in cmd:
            raise RuntimeError("numpy quick exited with 1: boom")
        return real(cmd, env, timeout)

    monkeypatch.setattr(harness, "_run_json", numpy_fails)
    assert main(["bench", "--quick", "--repeats", "1", "--peers", "bp_gpu-cpu,numpy", "--no-micro", "--out",
                 str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "quick    numpy               failed: numpy quick exited with 1: boom" in out
    assert err.strip() == ("bp-gpu bench: 1 of 2 measurements failed; the first, numpy on quick: numpy quick exited "
                           "with 1: boom")
