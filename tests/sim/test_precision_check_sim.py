"""bench/precision_check.py's device part on tiny sizes in the simulator: every step of it runs
(the CUDA peers of PyTorch are skipped as unavailable), and what it reports is the shape the device
check will record."""

import pytest


@pytest.mark.sim
def test_device_part_runs_every_step_and_reports_each_precision():
    from bp_gpu.bench.precision_check import PEER_NAMES, PRECISIONS, device_part
    from bp_gpu.bench.workloads import Workload

    tiny = Workload("tiny", (5, 8, 1), 16, 16, "simulator size")  # one batch an epoch
    r = device_part(600, workloads=(tiny,), check_sizes=(5, 8, 1), check_rows=16)
    assert r["skipped"] == []
    assert set(r["correct"]) == {"tf32", "bf16"} and max(r["correct"].values()) < 1e-5
    # The simulator's GEMM stand-in rounds TF32 operands as the contract says.
    assert r["tf32_rounding"] == {"matches": ["nearest, ties to even (round_tf32)"], "agrees_with_round_tf32": True}
    assert set(r["gemms"]["precisions"]) == set(PRECISIONS)
    assert all(v["tflops"] > 0 and v["fraction_of_peak"] is None for v in r["gemms"]["precisions"].values())
    epochs = r["epochs"]["tiny"]
    for p in PRECISIONS:
        ours, eager, compiled = (epochs[n] for n in PEER_NAMES[p])
        assert ours["seconds"] > 0 and 0 < ours["loss"] < 1
        assert "skipped" in eager and "skipped" in compiled
    assert set(r["targets"].values()) == {None}  # nothing to compare without PyTorch on a device

    stopped = device_part(0, workloads=(tiny,))
    assert stopped["skipped"][:3] == ["correct", "tf32_rounding", "gemms"] and stopped["epochs"] == {}


@pytest.mark.sim
def test_the_device_checks_second_command_runs_in_its_runner(tmp_path, monkeypatch):
    """bench/device_check.py's second command of a lease through the runner the lent GPU runs, at
    tiny sizes: "mixed precision" records device_part's result and passes its check."""
    from bp_gpu.bench import device_check as dc
    from bp_gpu.bench.workloads import Workload

    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(dc, "RESULTS", {"parts": {}})
    monkeypatch.setattr(dc, "PRECISION_WORKLOADS", (Workload("tiny", (5, 8, 1), 16, 16, "simulator size"),))
    monkeypatch.setattr(dc, "PRECISION_CHECK", {"check_sizes": (5, 8, 1), "check_rows": 16})
    dc.run_parts(dc.SECOND_PARTS, dc.SECOND_BUDGET_S, device=True, hard_kill=False)
    assert dc.RESULTS["parts"]["mixed precision"]["ok"], dc.RESULTS["parts"]
    assert set(dc.RESULTS["mixed_precision"]["correct"]) == {"tf32", "bf16"}
    # bp_gpu.torch's part needs PyTorch with CUDA: here it runs to the check that says so, and fails.
    inside = dc.RESULTS["parts"]["inside PyTorch"]
    assert not inside["ok"] and "PyTorch here has no CUDA" in inside["error"], inside
