"""The host-path benchmark (bench/host_path.py): its estimate arithmetic, and the W1 step's budget
of device calls counted by the recorder in the simulator (counts only: no timing is asserted)."""

import pytest
from bp_gpu.bench import host_path as hp

COSTS = {k: (v, "test") for k, v in dict(
    dispatcher_launch=6.0, dispatcher_array=3.0, prepared_launch=2.0, preparation_array=5.0, cublas_host=4.0,
    prepared_gemm_python=1.0, cupy_call=8.0, cupy_view=1.0, stream_query=0.5, graph_launch=5.0,
    **{"helper.max_blocks": 3.0, "helper.workspace": 4.0, "helper.stream": 0.5, "helper.arg": 0.5}).items()}


def test_estimate_adds_each_recorded_call_at_its_cost():
    counts = {"launch.prepared|k": 3, "launch.dispatcher|k": 2, "prepare|k": 1, "gemm.prepared|cublasGemmEx": 2,
              "gemm.cupy|cupy.matmul": 1, "cupy.work|take": 2, "cupy.view|reshape": 4, "stream|s": 2,
              "graph|cudaGraphLaunch": 1, "helper|arg": 10}
    arrays = {"launch.prepared|k": 9, "launch.dispatcher|k": 7, "prepare|k": 4}
    parts = hp.estimate(counts, arrays, 10.0, COSTS)
    assert parts == {
        "our Python": 10.0,
        "kernel launches": 3 * 2.0 + 2 * 6.0 + 7 * 3.0,
        "preparations in the step": 4 * 5.0,
        "GEMMs": 2 * (1.0 + 4.0) + (8.0 + 4.0),
        "CuPy calls": 2 * 8.0 + 4 * 1.0,
        "stream queries": 1.0,
        "graph launch": 5.0,
        "launch helpers (device-only work)": 5.0,
        "total": 10.0 + 39.0 + 20.0 + 22.0 + 20.0 + 1.0 + 5.0 + 5.0,
    }
    with pytest.raises(ValueError, match="no cost for recorded call 'odd|x'"):
        hp.estimate({"odd|x": 1}, {}, 0.0, COSTS)


def test_summary_columns():
    counts = {"launch.prepared|a": 2, "launch.dispatcher|b": 1, "gemm.prepared|g": 3, "cupy.work|take": 2,
              "cupy.view|x": 1, "prepare|a": 1}
    got = hp.summarize(counts, {"launch.prepared|a": 5, "launch.dispatcher|b": 2, "prepare|a": 3})
    assert got["launches prepared"] == 2 and got["launches dispatcher"] == 1 and got["array args"] == 7
    assert got["GEMMs"] == 3 and got["CuPy calls (work)"] == 2 and got["CuPy calls (view)"] == 1
    assert got["preparations"] == 1


def test_w1_step_budget_in_the_simulator():
    # The counts the README's CUDA section states, for this checkout.
    res = hp.run_child(None, repeats=2)
    rows = {r["scenario"]: r for r in hp.report({"now": res}, hp.COSTS)["rows"]}
    step = rows["train_step sgd"]
    assert (step["launches prepared"], step["launches dispatcher"], step["array args"]) == (6, 0, 25)
    assert (step["GEMMs"], step["preparations"], step["CuPy calls (work)"], step["CuPy calls (view)"]) == (7, 0, 1, 0)
    assert rows["train_step lamb"]["launches prepared"] == 7
    epoch = rows["run_epoch step sgd"]  # two gathers and a slice of the order per batch; per-epoch calls spread
    assert (epoch["launches prepared"], epoch["GEMMs"], epoch["preparations"]) == (6, 7, 0)
    assert epoch["CuPy calls (work)"] == pytest.approx(2, abs=0.05) and epoch["CuPy calls (view)"] == 1
    replay = rows["compiled step sgd"]  # two batch copies, one graph launch, the loss copy
    assert (replay["graph launches"], replay["launches prepared"], replay["GEMMs"]) == (1, 0, 0)
    assert replay["CuPy calls (work)"] == 3
    assert res["prepared_gemm_us"] is None or res["prepared_gemm_us"] > 0
