"""A dry run of bench/device_check.py's GPU parts in the simulator, at tiny sizes, with a NumPy
stand-in for CuPy (events read the host clock, allocations are not seen, the sleeping kernel does
nothing). Nothing here is a measurement: it runs the script's calls into bp_gpu (signatures,
shapes, the peers, the result records and the table) so that its one run on a lent GPU does not
fail on them."""

import sys
import time
import types
from types import SimpleNamespace

import numpy as np
import pytest
from bp_gpu.bench import device_check as dc
from bp_gpu.bench import workloads


class _Event:
    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


class _MemoryHook:
    name = "stand-in"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def fake_cupy(monkeypatch):
    rng = np.random.default_rng(0)
    cuda = types.ModuleType("cupy.cuda")
    hooks = types.ModuleType("cupy.cuda.memory_hook")
    hooks.MemoryHook = _MemoryHook
    stream = SimpleNamespace(ptr=0, synchronize=lambda: None)
    cuda.Event, cuda.memory_hook = _Event, hooks
    cuda.get_elapsed_time = lambda a, b: (b.t - a.t) * 1e3
    cuda.get_current_stream = lambda: stream
    cupy = types.ModuleType("cupy")
    cupy.cuda, cupy.__version__ = cuda, "stand-in"
    for name in ("float32", "float64", "zeros", "empty", "ones", "max", "abs", "copyto"):
        setattr(cupy, name, getattr(np, name))
    cupy.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype)
    cupy.random = SimpleNamespace(
        standard_normal=lambda shape, dtype=np.float64: rng.standard_normal(shape).astype(dtype),
        random=lambda shape, dtype=np.float64: rng.random(shape).astype(dtype))
    for name, mod in (("cupy", cupy), ("cupy.cuda", cuda), ("cupy.cuda.memory_hook", hooks)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(dc, "_SLEEPER", SimpleNamespace(sleep=lambda ms: None, ms_per_iteration=1e-3))
    monkeypatch.setattr(dc, "RESULTS", {"sections": {}, "device": "simulator dry run"})
    monkeypatch.setattr(dc, "W1", ([5, 8, 6, 1], 16))
    monkeypatch.setattr(dc, "ARCHS", {"W1": ([5, 8, 6, 1], 16), "W2": ([7, 9, 1], 12)})
    monkeypatch.setitem(workloads.WORKLOADS, "tiny", workloads.Workload("tiny", (5, 6, 1), 32, 64, "dry run"))
    monkeypatch.setattr(dc, "TRAINING_WORKLOADS", ("tiny",))
    from bp_gpu.kernels import _launch

    # Fewer simulated threads per launch (each is a Python thread): any geometry is correct.
    monkeypatch.setattr(_launch, "THREADS", 8)
    monkeypatch.setattr(_launch, "_SIM_MAX_BLOCKS", 2)
    return cupy


@pytest.mark.sim
def test_kernel_cases_prepare_every_kernel(fake_cupy):
    cases = dc.kernel_cases([5, 12, 6, 1], 40)
    assert {c[0] for c in cases} >= {"bias_sigmoid_forward", "output_loss_delta", "optimizer_update adam",
                                     "outer_sigmoid_delta_backward", "lamb_update (2 launches)"}
    for name, _, launch, nbytes in cases:
        launch()  # the prepared launch runs in the simulator
        assert nbytes > 0, name


@pytest.mark.sim
def test_gpu_parts_run_and_fill_the_table(fake_cupy, capsys, monkeypatch):
    with pytest.raises(AssertionError, match="step hygiene failed"):  # nothing is held or counted here
        dc.step_hygiene(n_batches=1, epoch_batches=2)
    assert set(dc.RESULTS["hygiene"]) == {"train_step adam", "train_step lamb", "compiled step adam",
                                          "run_epoch resident", "run_epoch streamed"}
    assert all("error" not in v and v["steps"] >= 1 for v in dc.RESULTS["hygiene"].values()), dc.RESULTS["hygiene"]
    monkeypatch.setattr(dc, "OPTIMIZERS", ("sgd", "lamb"))  # the two update kernels
    out = dc.compiled_vs_eager(steps=2)  # the simulator replays the recorded calls: equal bit for bit
    assert set(out) == {"sgd", "lamb"} and all(v["losses_equal"] and v["params_equal"] for v in out.values())
    rows = dc.host_per_step(calls=1, warm=1, held=1)
    assert [(r["arch"], r["mode"]) for r in rows if "error" not in r] == [
        (a, m) for a in ("W1", "W2") for m in ("eager train_step", "compiled step")], rows
    steps = dc.training_steps(repeats=1)
    timed = {r["impl"] for r in steps if "us_per_step" in r}
    assert timed == {"bp_gpu-step-cuda", "bp_gpu-cuda", "bp_gpu-compiled-cuda"}, steps
    assert [r for r in steps if r["impl"] == "torch-eager-cuda"][0].get("skipped")
    dc.host_path_estimate(repeats=1)
    dc.print_table(None, None, dc.RESULTS["training_steps"])
    text = capsys.readouterr().out
    assert "step hygiene, run_epoch streamed:" in text and "compiled step vs eager train_step: sgd bit for bit" in text
    assert "host-path estimate (simulator), W1: train_step sgd" in text and "bp_gpu-compiled-cuda" in text
