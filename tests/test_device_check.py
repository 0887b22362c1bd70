"""The device check's host-side logic, run here without a GPU (its GPU parts run on a lent
machine only, once, so what can be checked before that is checked here): the no-device exit, the
gpu-test runner's verdict, and the table with failed rows."""

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


def test_table_shows_failed_rows(capsys, monkeypatch):
    monkeypatch.setattr(dc, "RESULTS", {
        "sections": {"kernel timings": {"ok": True}},
        "device": "CUDA device: test",
        "cuda_vs_cpu": [{"dtype": "float64", "loss_rel_err": 1e-13, "grad_max_rel_err": 2e-12}],
        "hygiene": {"sleep_kernel_ms": 48.0, "enqueue_ms_behind_sleep_kernel": 0.4,
                    "no_host_sync": True, "device_allocs_per_step": 0.0},
    })
    kernels = [{"kernel": "bias_sigmoid_forward", "arch": "W2", "shape": "(4096, 1024)",
                "error": "CudaAPIError: boom"},
               {"kernel": "optimizer_update sgd", "arch": "W2", "shape": "P=1", "us": 2.0,
                "GB/s": 1.5, "frac_copy_bw": 0.5, "host_us": 9.0}]
    steps = [{"impl": "PyTorch eager", "arch": "W2", "batch": 4096, "error": "ImportError: torch"},
             {"impl": "bp_gpu cuda", "arch": "W2", "batch": 4096, "us_per_step": 10.0,
              "host_us_per_step": 5.0, "TFLOP/s": 1.0}]
    dc.print_table(3000.0, kernels, steps)
    out = capsys.readouterr().out
    assert "error: CudaAPIError: boom" in out and "error: ImportError: torch" in out
    assert "cuda vs cpu, float64: max loss rel err 1.0e-13" in out
    assert "enqueue 0.40 ms behind a 48 ms kernel (no host sync)" in out
    assert "kernel timings ok" in out
