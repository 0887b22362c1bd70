"""The device check's host-side logic, run here without a GPU (its GPU parts run on a lent
machine only, once, so what can be checked before that is checked here): the no-device exit, the
gpu-test runner's verdict, the hygiene verdicts, the sleeping kernel's length, and the table with
failed rows. (tests/sim/test_device_check_sim.py dry-runs the GPU parts in the simulator.)"""

import json

import pytest
from bp_gpu.bench import device_check as dc

from bp_gpu.backends import cuda_status

pytestmark = pytest.mark.skipif(cuda_status()[0], reason="a CUDA device is usable: the real check applies")


def test_no_device_exits_2_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(dc, "RESULTS", {"sections": {}})
    assert dc.main() == 2
    res = json.loads((tmp_path / "device_check.json").read_text())
    assert res["skipped"] == cuda_status()[1] and res["sections"] == {}


def test_gpu_tests_that_only_skip_do_not_pass():
    # Here every gpu test skips (no device); on the lent machine that means the test process saw
    # no device, which must fail the section, not pass it.
    with pytest.raises(RuntimeError, match="did not all run: .*skipped"):
        dc.run_gpu_tests()


def test_sleep_iterations_cover_the_time_asked():
    assert dc.sleep_iterations(10.0, 0.001) == 12500  # 10 ms at 1 us per iteration, 25% margin
    assert dc.sleep_iterations(0.0, 0.5) == 1


def test_hygiene_verdicts():
    # Every step enqueued while the device slept, and only the API's own allocations: clean.
    v = dc.hygiene_verdict("all", [0.2, 0.4, 0.6], 100.0, allocs=3, expected_allocs=3)
    assert v["no_host_sync"] and v["no_extra_allocs"] and v["enqueued_during_sleep"] == 3
    # A step that came after the sleep ended waited for the device.
    v = dc.hygiene_verdict("all", [0.2, 101.0, 101.2], 100.0, allocs=3, expected_allocs=3)
    assert not v["no_host_sync"] and v["enqueued_during_sleep"] == 1
    # The streamed loop waits for its double buffer by design: 4 batches ahead is enough.
    v = dc.hygiene_verdict("pipelined", [0.1, 0.2, 0.3, 0.4, 100.5, 100.6], 100.0, allocs=0, expected_allocs=0)
    assert v["no_host_sync"] and v["needed"] == 4
    v = dc.hygiene_verdict("pipelined", [0.1, 100.2, 100.3, 100.4, 100.5], 100.0, allocs=0, expected_allocs=0)
    assert not v["no_host_sync"]
    assert not dc.hygiene_verdict("all", [0.1], 100.0, allocs=2, expected_allocs=1)["no_extra_allocs"]


def test_table_shows_failed_rows(capsys, monkeypatch):
    monkeypatch.setattr(dc, "RESULTS", {
        "sections": {"kernel timings": {"ok": True}},
        "device": "CUDA device: test",
        "cuda_vs_cpu": [{"dtype": "float64", "loss_rel_err": 1e-13, "grad_max_rel_err": 2e-12}],
        "launch_path": {"packed": True, "fallback_warning": None,
                        "occupancy": [{"kernel": "k", "dtype": "float32", "registers": 40, "ours": 5, "driver": 5}]},
        "hygiene": {"train_step adam": dc.hygiene_verdict("all", [0.1, 0.2], 48.0, 2, 2),
                    "run_epoch streamed": {"error": "CUDARuntimeError: boom"}},
        "compiled_vs_eager": {"lamb": {"losses_equal": True, "params_equal": True}},
        "host_per_step": [{"arch": "W1", "mode": "eager train_step", "host_us": 80.0, "device_us": 60.0,
                           "wall_us": 85.0}, {"arch": "W2", "mode": "compiled step", "error": "RuntimeError: x"}],
        "host_path": {"train_step sgd": {"estimate_us": 67.0, "python_us": 5.0}},
    })
    kernels = [{"kernel": "bias_sigmoid_forward", "arch": "W2", "shape": "(4096, 1024)",
                "error": "CudaAPIError: boom"},
               {"kernel": "optimizer_update sgd", "arch": "W2", "shape": "P=1", "us": 2.0,
                "GB/s": 1.5, "frac_copy_bw": 0.5, "host_us": 9.0, "queued": False}]
    steps = [{"impl": "torch-eager-cuda", "arch": "W2", "batch": 4096, "skipped": "torch sees no CUDA device"},
             {"impl": "bp_gpu-cuda", "arch": "W2", "batch": 4096, "error": "ImportError: x"},
             {"impl": "bp_gpu-step-cuda", "arch": "W2", "batch": 4096, "us_per_step": 10.0,
              "TFLOP/s": 1.0, "loss": 0.69}]
    dc.print_table(3000.0, kernels, steps)
    out = capsys.readouterr().out
    assert "error: CudaAPIError: boom" in out and "error: ImportError: x" in out
    assert "skipped: torch sees no CUDA device" in out and "launch-bound" in out
    assert "cuda vs cpu, float64: max loss rel err 1.0e-13" in out
    assert "step hygiene, train_step adam: 2/2 enqueued during a 48 ms kernel (no host sync)" in out
    assert "step hygiene, run_epoch streamed: error: CUDARuntimeError: boom" in out
    assert "prepared (one cuLaunchKernel); occupancy table = driver for 1/1 kernels" in out
    assert "lamb bit for bit" in out and "host-path estimate (simulator), W1: train_step sgd 67 us" in out
    assert "kernel timings ok" in out
