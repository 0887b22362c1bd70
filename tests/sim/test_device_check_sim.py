"""A dry run of bench/device_check.py in the simulator: every part, in order, through the runner
the lent GPU runs (``run_parts``, the default budget), at tiny sizes, with a NumPy stand-in for CuPy
(events read the host clock, allocations are not seen, the sleeping kernel does nothing, a stream
capture is bookkeeping). Nothing here is a measurement: it runs the script's calls into bp_gpu
(signatures, shapes, the peers, the records and the table) so that its one run on a lent GPU does
not fail on them. The parts that cannot pass here fail with the message that says why."""

import json
import sys
import time
import types
from types import SimpleNamespace

import numpy as np
import pytest
from bp_gpu.bench import device_check as dc
from bp_gpu.bench import device_timing, workloads


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


class _CaptureError(RuntimeError):
    """What CuPy raises for a failed runtime call (CUDARuntimeError)."""


class _Streams:
    """CuPy's current stream (``with stream:`` pushes one) and stream capture's rules: synchronizing
    a capturing stream fails and invalidates the capture, whose end then fails too."""

    def __init__(self):
        self.stack = [self.Stream()]

    def current(self):
        return self.stack[-1]

    def Stream(self, non_blocking=False):
        streams = self

        class Stream:
            ptr = 0x9000 + len(getattr(streams, "stack", []))
            capturing = invalidated = False

            def record(self):
                return _Event()

            def wait_event(self, event):
                pass

            def synchronize(self):
                if self.capturing:
                    self.invalidated = True
                    raise _CaptureError("cudaErrorStreamCaptureUnsupported: operation not permitted when stream "
                                        "is capturing")

            def begin_capture(self):
                self.capturing = True

            def end_capture(self):
                self.capturing = False
                if self.invalidated:
                    raise _CaptureError("cudaErrorStreamCaptureInvalidated: operation failed due to a previous error")
                return SimpleNamespace(launch=lambda stream: None)

            def __enter__(self):
                streams.stack.append(self)
                return self

            def __exit__(self, *exc):
                streams.stack.pop()
                return False

        return Stream()


class _Device:
    id = 0

    def __init__(self, device_id=0):
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def fake_cupy(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    streams = _Streams()
    cuda = types.ModuleType("cupy.cuda")
    hooks = types.ModuleType("cupy.cuda.memory_hook")
    hooks.MemoryHook = _MemoryHook
    cuda.Event, cuda.memory_hook, cuda.Device, cuda.Stream = _Event, hooks, _Device, streams.Stream
    cuda.get_elapsed_time = lambda a, b: (b.t - a.t) * 1e3
    cuda.get_current_stream = streams.current
    cuda.runtime = SimpleNamespace(
        driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13000, getDeviceCount=lambda: 1, getDevice=lambda: 0,
        deviceSynchronize=lambda: None,
        getDeviceProperties=lambda i: {"name": b"simulated", "major": 9, "minor": 0, "multiProcessorCount": 2,
                                       "totalGlobalMem": 2**30})
    cuda.nccl = SimpleNamespace(available=True, get_version=lambda: 22800)
    cupy = types.ModuleType("cupy")
    cupy.cuda, cupy.__version__ = cuda, "stand-in"
    for name in ("float32", "float64", "zeros", "empty", "ones", "full", "max", "abs", "copyto"):
        setattr(cupy, name, getattr(np, name))
    cupy.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype)
    cupy.get_default_memory_pool = lambda: SimpleNamespace(used_bytes=lambda: 0)
    cupy.random = SimpleNamespace(
        standard_normal=lambda shape, dtype=np.float64: rng.standard_normal(shape).astype(dtype),
        random=lambda shape, dtype=np.float64: rng.random(shape).astype(dtype))
    for name, mod in (("cupy", cupy), ("cupy.cuda", cuda), ("cupy.cuda.memory_hook", hooks)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(device_timing, "_SLEEPER", SimpleNamespace(sleep=lambda ms: None, ms_per_iteration=1e-3))
    monkeypatch.setattr(device_timing, "REPS", 1)
    monkeypatch.setattr(device_timing, "INNER", 1)
    monkeypatch.setattr(device_timing, "WARMUP", 1)
    monkeypatch.setattr(dc, "RESULTS", {"parts": {}, "device": "simulator dry run"})
    # Tiny sizes everywhere (each simulated thread is a Python thread).
    monkeypatch.setattr(dc, "W1", ([5, 6, 1], 16))
    monkeypatch.setattr(dc, "ARCHS", {"W1": ([5, 6, 1], 16)})
    monkeypatch.setattr(dc, "HOST_ARCHS", ("W1",))
    monkeypatch.setattr(dc, "DP_ARCHS", ("W1",))
    monkeypatch.setattr(dc, "PARITY_PROBLEMS", [([5, 7, 1], 9, "float64"), ([4, 6, 5, 2], 11, "float32")])
    monkeypatch.setattr(dc, "COPY_MIB", 1)
    # The simulator runs a Python thread per CUDA thread: the default batch is 65,536 of them.
    monkeypatch.setattr(dc, "LAUNCH_SHAPE", (6, 5))
    monkeypatch.setattr(dc, "OPTIMIZERS", ("sgd", "lamb"))  # the two update kernels
    monkeypatch.setattr(dc, "COMPILED_STEPS", 2)
    monkeypatch.setattr(dc, "CAPTURE_ROUNDS", 1)
    monkeypatch.setattr(dc, "HOST_CALLS", 1)
    monkeypatch.setattr(dc, "HOST_WARM", 1)
    monkeypatch.setattr(dc, "HOST_HELD", 1)
    monkeypatch.setattr(dc, "HYGIENE_BATCHES", 1)
    monkeypatch.setattr(dc, "HYGIENE_EPOCH_BATCHES", 2)
    monkeypatch.setattr(dc, "TRAINING_REPEATS", 1)
    monkeypatch.setitem(workloads.WORKLOADS, "tiny", workloads.Workload("tiny", (5, 6, 1), 32, 64, "dry run"))
    monkeypatch.setattr(dc, "TRAINING_WORKLOADS", ("tiny",))
    # What has no simulated counterpart: compiled kernels and the driver's occupancy query; NCCL
    # (the all-reduces are MPI's on host memory); the gpu test files (stand-ins that pass).
    monkeypatch.setattr(dc, "_compiled_kernels", lambda: [
        ("bias_sigmoid_forward_kernel", "float32", SimpleNamespace(regs_per_thread=32, shared_mem_per_block=2048))])
    monkeypatch.setattr(dc, "_driver_blocks_per_sm", lambda kernel, threads: 8)

    def host_reducers(group, engine):
        from bp_gpu import distributed as D

        return D.make_reducer(group, engine, "mpi"), D.make_reducer(group, engine, "mpi")

    monkeypatch.setattr(dc, "_reducers", host_reducers)
    for name in ("test_gpu.py", "test_gpu_distributed.py"):
        (tmp_path / name).write_text("import pytest\n\n\n@pytest.mark.gpu\ndef test_stand_in():\n    pass\n")
    monkeypatch.setattr(dc, "TESTS", tmp_path)
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    from bp_gpu.kernels import _launch

    # Few simulated threads per launch (each is a Python thread): any geometry is correct.
    monkeypatch.setattr(_launch, "THREADS", 4)
    monkeypatch.setattr(_launch, "MAX_TX", 4)
    monkeypatch.setattr(_launch, "_SIM_MAX_BLOCKS", 1)
    # The gpu-test runner runs for real once (the "gpu tests" part); the NCCL part's second run of
    # it is its stand-in's summary.
    runs = []
    real_runner = dc.run_gpu_tests
    monkeypatch.setattr(dc, "run_gpu_tests", lambda module="test_gpu.py": runs.append(module) or (
        real_runner(module) if len(runs) == 1 else {"summary": f"{module}: 1 passed (stand-in)"}))
    return cupy


# What cannot pass in the simulator, and says so: its launches are simulated, not packed, and
# nothing holds the device, so nothing is enqueued during a sleep.
EXPECTED_FAILURES = {"launch path": "prepared launches are not all packed",
                     "step hygiene": "step hygiene failed",
                     "data-parallel NCCL": "data-parallel step hygiene"}


@pytest.mark.sim
def test_every_part_runs_within_the_budget_and_fills_the_table(fake_cupy, capsys, tmp_path, monkeypatch):
    written = []
    real_write = dc.write_json
    monkeypatch.setattr(dc, "write_json", lambda: (real_write(), written.append(
        json.loads((tmp_path / "out" / "device_check.json").read_text())))[0])
    dc.run_parts(dc.PARTS, dc.DEFAULT_BUDGET_S, device=True, hard_kill=False)
    parts = dc.RESULTS["parts"]
    assert list(parts) == [p.name for p in dc.PARTS]
    for name, v in parts.items():
        assert "skipped" not in v, (name, v)
        if name in EXPECTED_FAILURES:
            assert not v["ok"] and EXPECTED_FAILURES[name] in v["error"], (name, v)
        else:
            assert v["ok"], (name, v)
    # The JSON, rewritten before each part (saying which runs) and after it.
    assert [w.get("running") for w in written] == [x for p in dc.PARTS for x in (p.name, None)]
    assert written[-1]["parts"] == json.loads(json.dumps(parts, default=str))
    r = dc.RESULTS
    assert r["versions"]["CUDA driver"] == "13.0" and "simulated, cc 9.0, 2 SMs" in r["versions"]["device"]
    lp = r["launch_path"]
    assert lp["this process"]["path"] == lp["fresh process"]["path"] == "simulator"  # the fresh process ran
    assert lp["this process"]["empty_batch_sums_zero"] and "one device" in lp["device binding"]
    assert "cudaErrorStreamCaptureUnsupported" in r["capture"]["failed_capture"]  # its own error, not end_capture's
    assert r["capture"]["handles_left"] == 0 and np.isfinite(r["capture"]["loss_after"])
    assert set(r["compiled_vs_eager"]) == {"sgd", "lamb"}
    assert [(x["arch"], x["mode"]) for x in r["host_per_step"] if "error" not in x] == [
        ("W1", m) for m in ("eager train_step", "compiled step")], r["host_per_step"]
    assert set(r["hygiene"]) == {"train_step adam", "train_step lamb", "compiled step adam", "run_epoch resident",
                                 "run_epoch streamed"}
    assert all("error" not in v and v["steps"] >= 1 for v in r["hygiene"].values()), r["hygiene"]
    assert {x["kernel"] for x in r["kernels"] if "error" not in x} >= {
        "bias_sigmoid_forward", "output_loss_delta", "optimizer_update adam", "outer_sigmoid_delta_backward",
        "lamb_update (2 launches)"}, r["kernels"]
    timed = {x["impl"] for x in r["training_steps"] if "us_per_step" in x}
    assert timed == {"bp_gpu-step-cuda", "bp_gpu-cuda", "bp_gpu-compiled-cuda"}, r["training_steps"]
    assert r["data_parallel"]["tests"].endswith("1 passed") or "1 passed" in r["data_parallel"]["tests"]
    assert [x["arch"] for x in r["data_parallel"]["steps"]] == ["W1"]
    dc.print_table()
    text = capsys.readouterr().out
    assert "compiled step vs eager train_step: sgd bit for bit, lamb bit for bit" in text
    assert "step hygiene, run_epoch streamed:" in text and "bp_gpu-compiled-cuda" in text
    assert "launch path: this process simulator, fresh process simulator" in text
    assert "data-parallel (NCCL 22800, one rank)" in text and "\nparts:\n" in text
