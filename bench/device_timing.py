"""Measuring on a lent GPU, for ``bench/device_check.py``'s parts: a sleeping kernel that holds the
device while the host enqueues (so host time and device time separate), device times from CuPy
events behind it, CuPy's allocations counted, and the verdict of a step-hygiene case.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any


def synchronize() -> None:
    """Wait for CuPy's current stream."""
    import cupy

    cupy.cuda.get_current_stream().synchronize()


def sleep_iterations(ms: float, ms_per_iteration: float, margin: float = 1.25) -> int:
    """Iterations of the sleeping kernel for at least ``ms`` (``nanosleep`` sleeps anywhere in
    [0, 2t] per the PTX ISA, so it is calibrated, and padded by ``margin``)."""
    return max(1, math.ceil(ms / ms_per_iteration * margin))


class Sleeper:
    """A one-thread kernel that sleeps on CuPy's current stream: work enqueued behind it starts
    only when it ends, so the host can enqueue (and be timed enqueuing) while the device waits."""

    def __init__(self) -> None:
        from numba import cuda

        @cuda.jit
        def sleep_kernel(n):
            for _ in range(n):
                cuda.nanosleep(1000)

        self.kernel = sleep_kernel
        self.ms_per_iteration = self._calibrate()

    def launch(self, n: int) -> None:
        from bp_gpu.kernels import _launch
        from numba.cuda.core.errors import NumbaPerformanceWarning

        with warnings.catch_warnings():  # one thread on purpose: no low-occupancy warning
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            configured = self.kernel[1, 1, _launch.stream()]
        configured(n)

    def _calibrate(self) -> float:
        import cupy

        self.launch(1)  # compile and load
        n, ms = 2000, 0.0
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        for _ in range(8):
            start.record()
            self.launch(n)
            end.record()
            end.synchronize()
            ms = cupy.cuda.get_elapsed_time(start, end)
            if ms >= 5.0:
                break
            n *= 4
        return max(ms, 1e-3) / n

    def sleep(self, ms: float) -> None:
        self.launch(sleep_iterations(ms, self.ms_per_iteration))


_SLEEPER: Sleeper | None = None


def sleeper() -> Sleeper:
    global _SLEEPER
    if _SLEEPER is None:
        _SLEEPER = Sleeper()
    return _SLEEPER


def behind_sleep(fn: Callable[[], None], calls: int, sleep_ms: float) -> dict[str, float]:
    """``calls`` calls of fn enqueued behind a sleeping kernel of ``sleep_ms``: the device time of
    the calls run back to back (events recorded after the sleep and after the calls), the host time
    to enqueue them, the sleep's own measured length, and ``queued``: the host finished enqueuing
    before the sleep ended (else the device time includes launch gaps)."""
    import cupy

    s = sleeper()  # built (and calibrated) before anything is recorded
    stream = cupy.cuda.get_current_stream()
    before, start, end = cupy.cuda.Event(), cupy.cuda.Event(), cupy.cuda.Event()
    before.record(stream)
    s.sleep(sleep_ms)
    start.record(stream)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    end.record(stream)
    host_ms = (time.perf_counter() - t0) * 1e3
    end.synchronize()
    slept = cupy.cuda.get_elapsed_time(before, start)
    return {"device_ms": cupy.cuda.get_elapsed_time(start, end), "host_ms": host_ms, "sleep_ms": slept,
            "queued": host_ms < slept}


REPS, INNER, WARMUP = 15, 10, 3  # time_device's defaults


def time_device(fn: Callable[[], None], reps: int | None = None, inner: int | None = None,
                warmup: int | None = None) -> dict[str, Any]:
    """Median device time of one call of fn in microseconds (``us``) over ``reps`` runs of
    ``inner`` calls (after ``warmup`` calls), its launches queued behind a sleeping kernel so the
    device runs them back to back; ``host_us``: median host time to enqueue one call; ``queued``:
    every repetition was enqueued before its sleep ended. Defaults: REPS, INNER, WARMUP."""
    import cupy

    reps, inner = REPS if reps is None else reps, INNER if inner is None else inner
    for _ in range(WARMUP if warmup is None else warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    enqueue_ms = (time.perf_counter() - t0) * 1e3
    cupy.cuda.get_current_stream().synchronize()
    sleep_ms = max(0.5, 3 * enqueue_ms)
    runs = [behind_sleep(fn, inner, sleep_ms) for _ in range(reps)]
    return {"us": statistics.median(r["device_ms"] for r in runs) * 1e3 / inner,
            "host_us": statistics.median(r["host_ms"] for r in runs) * 1e3 / inner,
            "queued": all(r["queued"] for r in runs)}


def malloc_counter() -> Any:
    """A CuPy memory hook (use it as a context manager) counting allocation requests in ``.n``."""
    from cupy.cuda import memory_hook

    class CountMallocs(memory_hook.MemoryHook):
        name = "count_mallocs"

        def __init__(self):
            self.n = 0

        def malloc_preprocess(self, **kwargs):
            self.n += 1

    return CountMallocs()


def hygiene_verdict(kind: str, batch_times_ms: list[float], sleep_ms: float, allocs: int, expected_allocs: int,
                    pipeline: int = 4) -> dict[str, Any]:
    """The verdict of one hygiene case from what was measured. ``batch_times_ms``: when each step
    (or batch) had been enqueued, from the sleeping kernel's launch; a step that waited for the
    device would come after the sleep ended. ``kind``: "all" (every step must be enqueued during the
    sleep) or "pipelined" (a loop that waits for its double buffer by design: at least ``pipeline``
    batches ahead). Allocations must be exactly the ones the API makes (a returned loss, an epoch's
    order)."""
    ahead = sum(t < sleep_ms for t in batch_times_ms)
    need = len(batch_times_ms) if kind == "all" else min(pipeline, len(batch_times_ms))
    return {"steps": len(batch_times_ms), "enqueued_during_sleep": ahead, "needed": need, "sleep_ms": sleep_ms,
            "last_enqueued_ms": max(batch_times_ms) if batch_times_ms else 0.0, "allocs": allocs,
            "expected_allocs": expected_allocs, "no_host_sync": ahead >= need,
            "no_extra_allocs": allocs == expected_allocs}


def hygiene_case(run: Callable[[Callable[[], None]], Any], kind: str, expected_allocs: int,
                 sleep_ms: float = 150.0) -> dict[str, Any]:
    """Run ``run(mark)`` (which calls ``mark()`` after each step) behind a sleeping kernel, with
    CuPy's allocations counted; then the verdict."""
    import cupy

    run(lambda: None)  # warm: plans bound, kernels loaded, buffers allocated
    cupy.cuda.get_current_stream().synchronize()
    times: list[float] = []
    hook = malloc_counter()
    s = sleeper()
    s.sleep(sleep_ms)
    t0 = time.perf_counter()
    with hook:
        run(lambda: times.append((time.perf_counter() - t0) * 1e3))
    cupy.cuda.get_current_stream().synchronize()
    # The sleep's length, measured apart (a second launch of the same length).
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    s.sleep(sleep_ms)
    end.record()
    end.synchronize()
    return hygiene_verdict(kind, times, cupy.cuda.get_elapsed_time(start, end), hook.n, expected_allocs)
