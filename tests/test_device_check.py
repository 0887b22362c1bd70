"""The device check's host-side logic, run here without a GPU (its GPU parts run on a lent
machine only, once, so what can be checked before that is checked here): the budget its parts
plan for, the runner (skips, timeouts, the JSON around every part, a part stuck in C), the
no-device exit, the gpu-test runner's verdict, the hygiene verdicts, the sleeping kernel's length,
and the table with failed rows. (tests/sim/test_device_check_sim.py dry-runs every part in the
simulator.)"""

import json
import subprocess
import sys
import textwrap
import time

import pytest
from bp_gpu.bench import device_check as dc
from bp_gpu.bench import device_timing as dt

from bp_gpu.backends import cuda_status

no_device = pytest.mark.skipif(cuda_status()[0], reason="a CUDA device is usable: the real check applies")


def test_the_planned_budget_fits_the_default_budget():
    # The lease: 15 minutes with the machine's start, 10 per command. The parts' timeouts in order,
    # and the reserve for the table, must fit the default --budget; a new part must fit too.
    assert dc.planned_seconds(dc.PARTS) <= dc.DEFAULT_BUDGET_S <= 600
    # The second command of a lease, and the two with a machine's start, fit the lease.
    assert dc.planned_seconds(dc.SECOND_PARTS) <= dc.SECOND_BUDGET_S <= 600
    assert dc.DEFAULT_BUDGET_S + dc.SECOND_BUDGET_S + dc.START_S <= dc.LEASE_S
    names = [p.name for p in dc.PARTS]
    assert names[:5] == ["versions", "launch path", "cuda vs cpu", "gpu tests", "compiled vs eager"]
    assert names.index("host per step") < names.index("kernel bandwidth") < names.index("training epochs")
    assert names[-1] == "data-parallel NCCL" and len(set(names)) == len(names)
    assert all(p.timeout_s > 0 for p in dc.PARTS) and [p.name for p in dc.PARTS if not p.needs_device] == ["versions"]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """RESULTS fresh, the JSON under tmp_path/out; returns a reader of that JSON."""
    monkeypatch.setattr(dc, "RESULTS", {"parts": {}})
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    return lambda: json.loads((tmp_path / "out" / "device_check.json").read_text())


def test_parts_run_in_order_and_the_json_says_where_the_run_is(runner, capsys):
    seen = []

    def first():
        seen.append(runner())  # written before the part: it says which part runs
        dc.RESULTS["first"] = 1

    def second():
        seen.append(runner())
        raise ValueError("a broken measurement")

    def third():
        seen.append(runner())

    parts = [dc.Part("first", 5, first), dc.Part("second", 5, second), dc.Part("third", 5, third),
             dc.Part("fourth", 1000, third)]
    dc.run_parts(parts, 40, device=True, hard_kill=False)
    assert [s["running"] for s in seen] == ["first", "second", "third"]
    assert seen[1]["parts"]["first"]["ok"] and seen[1]["first"] == 1  # rewritten after the part
    assert seen[2]["parts"]["second"] == {"timeout_s": 5, "ok": False, "error": "ValueError: a broken measurement",
                                          "seconds": seen[2]["parts"]["second"]["seconds"]}
    final = runner()
    assert "running" not in final and final["parts"]["third"]["ok"]
    assert final["parts"]["fourth"]["skipped"].startswith("needs 1000 s, ")  # past the budget left
    out = capsys.readouterr().out
    assert "[second] FAILED: ValueError: a broken measurement" in out and "[fourth] skipped: needs 1000 s" in out


def test_a_part_past_its_timeout_is_stopped_and_the_next_runs(runner):
    def stubborn():
        while True:
            try:
                time.sleep(10)
            except Exception:  # what a part's guard around one measurement does: not a timeout's
                pass

    ran = []
    dc.run_parts([dc.Part("stuck", 0.2, stubborn), dc.Part("next", 5, lambda: ran.append(1))], 60, device=True,
                 hard_kill=False)
    assert dc.RESULTS["parts"]["stuck"]["error"] == "PartTimeout: timed out after 0 s" and ran == [1]
    assert runner()["parts"]["next"]["ok"]


def test_a_part_stuck_in_a_call_ends_the_process_and_the_json_names_it(tmp_path):
    # SIGALRM blocked stands for a CUDA call that never returns to Python: past the grace the
    # watchdog prints the stacks and ends the process; the JSON still names the part.
    script = textwrap.dedent("""
        import signal, time
        from bp_gpu.bench import device_check as dc
        dc.HARD_KILL_GRACE_S = 0.5
        def stuck():
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
            time.sleep(30)
        dc.run_parts([dc.Part("ok", 5, lambda: None), dc.Part("stuck", 0.5, stuck)], 60, device=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Timeout" in proc.stderr and "stuck" in proc.stderr
    res = json.loads((tmp_path / "device_check.json").read_text())
    assert res["running"] == "stuck" and res["parts"]["ok"]["ok"]


def test_command_line(capsys):
    args = dc.parse_args(["--budget", "200", "--parts", "gpu tests,versions"])
    assert args.budget == 200 and [p.name for p in args.parts] == ["versions", "gpu tests"]  # the check's order
    with pytest.raises(SystemExit):
        dc.parse_args(["--parts", "versions,gpu test"])
    assert "no part named 'gpu test'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        dc.parse_args(["--budget", "10"])
    assert "--budget must be more than 20 s" in capsys.readouterr().err
    # The second command of a lease: its parts, with its own default budget.
    second = dc.parse_args(["--parts", "second"])
    assert second.parts == dc.SECOND_PARTS and second.budget == dc.SECOND_BUDGET_S
    assert dc.parse_args([]).parts == dc.PARTS + dc.SECOND_PARTS and dc.parse_args([]).budget == dc.DEFAULT_BUDGET_S


@no_device
def test_no_device_prints_the_versions_exits_2_and_writes_json(runner, capsys):
    assert dc.main(["--budget", "100"]) == 2
    res = runner()
    assert res["skipped"] == cuda_status()[1] and res["parts"]["versions"]["ok"]
    assert res["versions"]["python"] == sys.version.split()[0] and "numba-cuda" in res["versions"]
    assert {k for k, v in res["parts"].items() if v.get("skipped") == "no usable CUDA device"} == {
        p.name for p in dc.PARTS[1:] + dc.SECOND_PARTS}
    assert "  numba-cuda" in capsys.readouterr().out


@no_device
def test_gpu_tests_that_only_skip_do_not_pass():
    # Here every gpu test skips (no device); on the lent machine that means the test process saw
    # no device, which must fail the part, not pass it.
    with pytest.raises(RuntimeError, match="did not all run: .*skipped"):
        dc.run_gpu_tests()


def test_sleep_iterations_cover_the_time_asked():
    assert dt.sleep_iterations(10.0, 0.001) == 12500  # 10 ms at 1 us per iteration, 25% margin
    assert dt.sleep_iterations(0.0, 0.5) == 1


def test_hygiene_verdicts():
    # Every step enqueued while the device slept, and only the API's own allocations: clean.
    v = dt.hygiene_verdict("all", [0.2, 0.4, 0.6], 100.0, allocs=3, expected_allocs=3)
    assert v["no_host_sync"] and v["no_extra_allocs"] and v["enqueued_during_sleep"] == 3
    # A step that came after the sleep ended waited for the device.
    v = dt.hygiene_verdict("all", [0.2, 101.0, 101.2], 100.0, allocs=3, expected_allocs=3)
    assert not v["no_host_sync"] and v["enqueued_during_sleep"] == 1
    # The streamed loop waits for its double buffer by design: 4 batches ahead is enough.
    v = dt.hygiene_verdict("pipelined", [0.1, 0.2, 0.3, 0.4, 100.5, 100.6], 100.0, allocs=0, expected_allocs=0)
    assert v["no_host_sync"] and v["needed"] == 4
    v = dt.hygiene_verdict("pipelined", [0.1, 100.2, 100.3, 100.4, 100.5], 100.0, allocs=0, expected_allocs=0)
    assert not v["no_host_sync"]
    assert not dt.hygiene_verdict("all", [0.1], 100.0, allocs=2, expected_allocs=1)["no_extra_allocs"]


def test_table_shows_failed_rows(capsys, monkeypatch):
    monkeypatch.setattr(dc, "RESULTS", {
        "parts": {"kernel bandwidth": {"ok": True, "timeout_s": 40, "seconds": 12.0},
                  "training epochs": {"ok": False, "timeout_s": 45,
                                      "skipped": "needs 45 s, 30 s of the 420 s budget left"}},
        "device": "CUDA device: test",
        "cuda_vs_cpu": [{"dtype": "float64", "loss_rel_err": 1e-13, "grad_max_rel_err": 2e-12}],
        "launch_path": {"this process": {"path": "packed"}, "fresh process": {"path": "packed"},
                        "occupancy": [{"kernel": "k", "dtype": "float32", "registers": 40, "ours": 5, "driver": 5}]},
        "hygiene": {"train_step adam": dt.hygiene_verdict("all", [0.1, 0.2], 48.0, 2, 2),
                    "run_epoch streamed": {"error": "CUDARuntimeError: boom"}},
        "compiled_vs_eager": {"lamb": {"losses_equal": True, "params_equal": True}},
        "capture": {"handles_left": 0, "bytes_left_per_step": 0.0, "failed_capture": "CUDARuntimeError: unsupported"},
        "host_per_step": [{"arch": "W1", "mode": "eager train_step", "host_us": 80.0, "device_us": 60.0,
                           "wall_us": 85.0}, {"arch": "W2", "mode": "compiled step", "error": "RuntimeError: x"}],
        "copy_GB/s": 3000.0,
        "kernels": [{"kernel": "bias_sigmoid_forward", "arch": "W2", "shape": "(4096, 1024)",
                     "error": "CudaAPIError: boom"},
                    {"kernel": "optimizer_update sgd", "arch": "W2", "shape": "P=1", "us": 2.0,
                     "GB/s": 1.5, "frac_copy_bw": 0.5, "host_us": 9.0, "queued": False}],
        "training_steps": [{"impl": "torch-eager-cuda", "arch": "W2", "batch": 4096,
                            "skipped": "torch sees no CUDA device"},
                           {"impl": "bp_gpu-cuda", "arch": "W2", "batch": 4096, "error": "ImportError: x"},
                           {"impl": "bp_gpu-step-cuda", "arch": "W2", "batch": 4096, "us_per_step": 10.0,
                            "TFLOP/s": 1.0, "loss": 0.69}],
    })
    dc.print_table()
    out = capsys.readouterr().out
    assert "error: CudaAPIError: boom" in out and "error: ImportError: x" in out
    assert "skipped: torch sees no CUDA device" in out and "launch-bound" in out
    assert "cuda vs cpu, float64: max loss rel err 1.0e-13" in out
    assert "step hygiene, train_step adam: 2/2 enqueued during a 48 ms kernel (no host sync)" in out
    assert "step hygiene, run_epoch streamed: error: CUDARuntimeError: boom" in out
    assert "launch path: this process packed, fresh process packed; occupancy table = driver for 1/1 kernels" in out
    assert "lamb bit for bit" in out and "a failed capture raised CUDARuntimeError: unsupported" in out
    assert "kernel bandwidth      ok (12 of 40 s)" in out
    assert "training epochs       skipped: needs 45 s, 30 s of the 420 s budget left" in out
