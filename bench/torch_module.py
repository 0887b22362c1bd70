"""``bp_gpu.torch.SigmoidMLP`` against the equivalent ``nn.Sequential``: a training step inside PyTorch.

A step is forward, backward and one AdamW update on a batch (mean BCE on the logits), float32, from
the workload's initial weights (``bench/workloads.py``) over its first batches in turn:

- ``sigmoidmlp``: ``SigmoidMLP`` in a PyTorch loop (``torch.optim.AdamW``, autograd);
- ``torch-eager``: its ``to_torch()`` twin (``nn.Linear`` + ``nn.Sigmoid``) in the same loop;
- ``bp_gpu-step``: ``MLP.train_step`` with ``bp_gpu.optim.AdamW``: bp_gpu's own step over the same
  network, without autograd or PyTorch's optimizer (what SigmoidMLP gives up to live in PyTorch).

Weight decay 0.01 on the weight matrices only (bp_gpu's AdamW never decays biases; the PyTorch
loops put the biases in a group without decay), so all three compute the same steps: their mean
losses agree (the ``loss`` column).

CPU (``python -m bp_gpu.bench.torch_module [--workloads W1,W2] [--repeats 5] [--threads N]
[--json FILE]``): every (peer, workload, repeat) in a fresh process, the peers' order rotated each
repeat, as ``bp-gpu bench`` does, so no peer's thread pools meet another's. ``--interleaved R``
(with ``--threads 1``): all peers in one process, R alternating blocks of steps each, so that on a
shared machine each peer sees the same load. Ratios are throughput over ``torch-eager``'s.

GPU: ``device_part(budget_s)`` is the device check's part (self-contained: it needs only
PyTorch with CUDA, CuPy and bp_gpu): correctness against ``nn.Sequential`` on CUDA tensors, step
hygiene (no host synchronisation: steps enqueued behind ``torch.cuda._sleep`` end before it does;
CuPy's pool does not grow), and milliseconds per step (CUDA events) and host microseconds per step
for the three peers on W1, W2 and W3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .harness import machine_info
from .worker import thread_env
from .workloads import WEIGHT_SEED, WORKLOADS, Workload, initial_weights, make_data

PEERS = ("sigmoidmlp", "torch-eager", "bp_gpu-step")
REFERENCE = "torch-eager"
LR, WEIGHT_DECAY = 1e-3, 0.01
N_BATCHES = 8  # distinct batches the loop cycles through
WARMUP_STEPS = 3
TARGET_S = 1.5  # timed seconds per measurement on the CPU
CPU_WORKLOADS = ("W1", "W2")
GPU_WORKLOADS = {"W1": 200, "W2": 50, "W3": 20}  # workload: timed steps


def _torch_step(torch: Any, model: Any) -> Callable[[Any, Any], Any]:
    """One step of a PyTorch loop on ``model`` (SigmoidMLP or its nn.Sequential twin)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() == 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.dim() == 1], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def make_peer(peer: str, w: Workload, X: np.ndarray, T: np.ndarray, device: str) -> tuple[Callable, Callable]:
    """``(step, total)``: ``step(k)`` trains on batch ``k mod N_BATCHES`` and returns its loss (on the
    device, unread); ``total(losses)`` sums them as a float (the only read of the device)."""
    B = w.batch

    def rows(k: int) -> slice:
        return slice(k % N_BATCHES * B, (k % N_BATCHES + 1) * B)

    if peer == "bp_gpu-step":
        import bp_gpu
        from bp_gpu import optim

        net = bp_gpu.MLP(w.sizes, backend="cuda" if device == "cuda" else "cpu", dtype="float32")
        net.set_weights(initial_weights(w))
        opt = optim.AdamW(net, LR, weight_decay=WEIGHT_DECAY)
        xp = net._engine.xp
        Xd, Td = xp.asarray(X), xp.asarray(T)
        return (lambda k: net.train_step(Xd[rows(k)], Td[rows(k)], opt),
                lambda losses: float(xp.sum(xp.stack(losses))))
    import torch

    from bp_gpu.torch import SigmoidMLP

    m = SigmoidMLP(w.sizes, device=device, seed=WEIGHT_SEED)  # initial_weights(w): the same draw
    step = _torch_step(torch, m if peer == "sigmoidmlp" else m.to_torch())
    Xt, Tt = torch.from_numpy(X).to(device), torch.from_numpy(T).to(device)
    return lambda k: step(Xt[rows(k)], Tt[rows(k)]), lambda losses: float(torch.stack(losses).sum())


def _data(w: Workload) -> tuple[np.ndarray, np.ndarray]:
    X, T = make_data(w)
    n = min(w.samples, N_BATCHES * w.batch)
    return np.ascontiguousarray(X[:n]), np.ascontiguousarray(T[:n])


def measure_cpu(peer: str, workload: str, threads: int, target_s: float = TARGET_S) -> dict[str, Any]:
    """One CPU measurement in this process: warm up (JIT, thread start-up), calibrate the step
    count on a few steps, time the steps. ``loss``: the mean over the first N_BATCHES timed steps,
    the same steps for every peer."""
    import torch

    torch.set_num_threads(threads)
    w = WORKLOADS[workload]
    step, total = make_peer(peer, w, *_data(w), "cpu")
    for k in range(WARMUP_STEPS):
        step(k)
    t0 = time.perf_counter()
    for k in range(WARMUP_STEPS):
        step(k)
    per_step = (time.perf_counter() - t0) / WARMUP_STEPS
    n = max(N_BATCHES, min(2000, int(target_s / per_step)))
    losses = []
    t0 = time.perf_counter()
    for k in range(n):
        losses.append(step(2 * WARMUP_STEPS + k))
    seconds = time.perf_counter() - t0
    return {"peer": peer, "workload": workload, "threads": threads, "steps": n, "step_ms": 1e3 * seconds / n,
            "loss": total(losses[:N_BATCHES]) / N_BATCHES, "ok": True}


def run_cpu(workloads: list[str], repeats: int, threads: int) -> list[dict[str, Any]]:
    """Every (workload, repeat, peer) in a fresh worker process; returns the per-measurement rows."""
    env = thread_env(threads)
    rows = []
    for name in workloads:
        for r in range(repeats):
            for peer in PEERS[r % len(PEERS):] + PEERS[: r % len(PEERS)]:
                cmd = [sys.executable, "-m", "bp_gpu.bench.torch_module", "--worker", peer, name,
                       "--threads", str(threads)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
                last = proc.stdout.strip().splitlines()[-1:]
                if proc.returncode != 0 or not last:
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    rows.append({"peer": peer, "workload": name, "ok": False, "error": tail})
                else:
                    rows.append(json.loads(last[0]))
                print(f"  {name} {peer} repeat {r + 1}: {rows[-1].get('step_ms', rows[-1].get('error'))}",
                      file=sys.stderr, flush=True)
    return rows


def run_interleaved(workloads: list[str], rounds: int, threads: int) -> list[dict[str, Any]]:
    """All peers in this process, their steps timed in alternating blocks (``rounds`` blocks each,
    the order rotated every round): on a shared machine whose load drifts, each peer sees the same
    load. Meant for one thread per pool (``thread_env(1)``), where no pool's threads wait for cores
    another pool holds; one row per block, as ``run_cpu``'s."""
    import torch

    torch.set_num_threads(threads)
    rows = []
    for name in workloads:
        w = WORKLOADS[name]
        X, T = _data(w)
        peers = {p: make_peer(p, w, X, T, "cpu") for p in PEERS}
        for step, _ in peers.values():
            for k in range(2 * WARMUP_STEPS):
                step(k)
        t0 = time.perf_counter()
        for step, _ in peers.values():
            step(0)
        block = max(N_BATCHES, int(TARGET_S / 3 / (time.perf_counter() - t0)))
        first = {}
        for r in range(rounds):
            for p in PEERS[r % len(PEERS):] + PEERS[: r % len(PEERS)]:
                step, total = peers[p]
                losses = []
                t0 = time.perf_counter()
                for k in range(block):
                    losses.append(step(k))
                seconds = time.perf_counter() - t0
                first.setdefault(p, total(losses[:N_BATCHES]) / N_BATCHES)
                rows.append({"peer": p, "workload": name, "threads": threads, "steps": block,
                             "step_ms": 1e3 * seconds / block, "loss": first[p], "ok": True})
    return rows


def phases(workloads: list[str], rounds: int, threads: int) -> list[dict[str, Any]]:
    """Where a PyTorch step's time goes, for ``sigmoidmlp`` and ``torch-eager`` in this process:
    median microseconds of ``zero_grad``, forward + loss, ``backward`` and ``opt.step`` over
    ``rounds`` alternating blocks of N_BATCHES steps. The forward and backward are what SigmoidMLP
    replaces; the rest is the same PyTorch code in both."""
    import torch

    from bp_gpu.torch import SigmoidMLP

    torch.set_num_threads(threads)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    out = []
    for name in workloads:
        w = WORKLOADS[name]
        X, T = (torch.from_numpy(a) for a in _data(w))
        m = SigmoidMLP(w.sizes, seed=WEIGHT_SEED)
        models = {"sigmoidmlp": m, "torch-eager": m.to_torch()}
        opts = {p: torch.optim.AdamW(mod.parameters(), lr=LR) for p, mod in models.items()}
        times: dict[str, list[list[float]]] = {p: [] for p in models}
        for r in range(rounds + 1):
            for p in list(models)[r % 2:] + list(models)[: r % 2]:
                model, opt, acc = models[p], opts[p], [0.0] * 4
                for k in range(N_BATCHES):
                    x, t = X[k * w.batch : (k + 1) * w.batch], T[k * w.batch : (k + 1) * w.batch]
                    t0 = time.perf_counter()
                    opt.zero_grad(set_to_none=True)
                    t1 = time.perf_counter()
                    loss = loss_fn(model(x), t)
                    t2 = time.perf_counter()
                    loss.backward()
                    t3 = time.perf_counter()
                    opt.step()
                    t4 = time.perf_counter()
                    for i, d in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                        acc[i] += d
                if r:  # the first round warms up
                    times[p].append([1e6 * a / N_BATCHES for a in acc])
        for p, blocks in times.items():
            med = [statistics.median(b[i] for b in blocks) for i in range(4)]
            out.append({"workload": name, "peer": p, "zero_grad_us": med[0], "forward_loss_us": med[1],
                        "backward_us": med[2], "optimizer_us": med[3]})
    return out


def format_phases(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'workload':8} {'peer':12} {'zero_grad us':>12} {'fwd+loss us':>12} {'backward us':>12} "
             f"{'opt.step us':>12}", "-" * 73]
    for r in rows:
        lines.append(f"{r['workload']:8} {r['peer']:12} {r['zero_grad_us']:12.0f} {r['forward_loss_us']:12.0f} "
                     f"{r['backward_us']:12.0f} {r['optimizer_us']:12.0f}")
    return "\n".join(lines)


def summarize(rows: list[dict[str, Any]], key: str = "step_ms") -> list[dict[str, Any]]:
    """Per (workload, peer): median, min and max of ``key`` and the throughput ratio over
    ``torch-eager`` (median over median)."""
    out = []
    for w in dict.fromkeys(r["workload"] for r in rows):
        med = {}
        for p in dict.fromkeys(r["peer"] for r in rows if r["workload"] == w):
            vals = [r[key] for r in rows if r["workload"] == w and r["peer"] == p and r.get("ok")]
            if not vals:
                out.append({"workload": w, "peer": p, "ok": False})
                continue
            med[p] = statistics.median(vals)
            losses = [r["loss"] for r in rows if r["workload"] == w and r["peer"] == p and r.get("ok")]
            out.append({"workload": w, "peer": p, "ok": True, key: med[p], "min": min(vals), "max": max(vals),
                        "n": len(vals), "loss": losses[-1]})
        for row in out:
            if row["workload"] == w and row["ok"] and REFERENCE in med:
                row["x_ref"] = med[REFERENCE] / row[key]
    return out


def format_rows(summary: list[dict[str, Any]], key: str = "step_ms", unit: str = "ms/step") -> str:
    lines = [f"{'workload':8} {'peer':14} {unit + ' (min-max)':>28} {'x torch-eager':>13} {'loss':>10}", "-" * 77]
    for r in summary:
        if not r["ok"]:
            lines.append(f"{r['workload']:8} {r['peer']:14} failed")
            continue
        span = f"{r[key]:.3f} ({r['min']:.3f}-{r['max']:.3f})"
        lines.append(f"{r['workload']:8} {r['peer']:14} {span:>28} {r.get('x_ref', float('nan')):13.2f} "
                     f"{r['loss']:10.6f}")
    return "\n".join(lines)


# -- the device check's part ----------------------------------------------------------------------
def _sleep_cycles_per_ms(torch: Any) -> float:
    """Clock cycles of ``torch.cuda._sleep`` per millisecond on this device, measured."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / start.elapsed_time(end)


def _correctness(torch: Any) -> dict[str, Any]:
    """Largest relative difference of logits and gradients from the nn.Sequential twin (float64,
    and float32) on CUDA tensors, on PyTorch's current and on a side stream."""
    from bp_gpu.torch import SigmoidMLP

    out = {}
    for dtype in (torch.float64, torch.float32):
        for stream in ("current", "side"):
            m = SigmoidMLP([33, 257, 129, 1], dtype=dtype, device="cuda", seed=0)
            seq = m.to_torch()
            x = torch.randn(4099, 33, device="cuda", dtype=dtype)
            t = (torch.rand(4099, 1, device="cuda") < 0.5).to(dtype)
            s = torch.cuda.Stream() if stream == "side" else torch.cuda.current_stream()
            s.wait_stream(torch.cuda.current_stream())
            res = []
            with torch.cuda.stream(s):
                for model in (m, seq):
                    xa = x.clone().requires_grad_()
                    y = model(xa)
                    torch.nn.functional.binary_cross_entropy_with_logits(y, t).backward()
                    res.append([y.detach()] + [p.grad for p in model.parameters()] + [xa.grad])
            torch.cuda.synchronize()
            err = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(*res))
            out[f"{str(dtype).split('.')[-1]} {stream} stream"] = err
    return out


def _hygiene(torch: Any, step: Callable[[int], Any], calls: int, cycles_per_ms: float) -> dict[str, Any]:
    """``calls`` steps enqueued behind a sleeping kernel: their host time, whether they were all
    enqueued before it ended (no host synchronisation), and how much CuPy's pool grew."""
    import cupy

    pool = cupy.get_default_memory_pool()
    sleep_ms = 200.0
    torch.cuda.synchronize()
    used = pool.used_bytes()
    end = torch.cuda.Event()
    torch.cuda._sleep(int(sleep_ms * cycles_per_ms))
    t0 = time.perf_counter()
    for k in range(calls):
        step(k)
    host_ms = 1e3 * (time.perf_counter() - t0)
    end.record()
    still_sleeping = not end.query()  # the steps were enqueued while the device still slept
    torch.cuda.synchronize()
    return {"host_us_per_step": 1e3 * host_ms / calls, "enqueued_ms": host_ms, "sleep_ms": sleep_ms,
            "no_host_sync": still_sleeping and host_ms < sleep_ms,
            "cupy_pool_growth_bytes": pool.used_bytes() - used}


def device_part(budget_s: float) -> dict[str, Any]:
    """The device check's part for ``bp_gpu.torch``: correctness, hygiene and speed on CUDA tensors
    (see the module docstring), within ``budget_s`` seconds (what does not fit is reported as
    skipped). Returns a JSON-able dict; ``ok`` is False when a check failed or could not run."""
    t_start = time.perf_counter()
    res: dict[str, Any] = {"ok": False, "skipped": []}

    def left() -> float:
        return budget_s - (time.perf_counter() - t_start)

    try:
        import torch

        if not torch.cuda.is_available():
            return {**res, "error": "PyTorch here has no CUDA (a CPU build, or no device)"}
        import cupy

        res["device"] = torch.cuda.get_device_name()
        res["versions"] = {"torch": torch.__version__, "cupy": cupy.__version__}
        res["correctness_max_rel"] = _correctness(torch)
        res["correct"] = all(e < (1e-10 if k.startswith("float64") else 1e-4)
                             for k, e in res["correctness_max_rel"].items())
        cycles = _sleep_cycles_per_ms(torch)
        rows = []
        for name, steps in GPU_WORKLOADS.items():
            w = WORKLOADS[name]
            X, T = _data(w)
            for peer in PEERS:
                if left() < 20:
                    res["skipped"].append(f"{name} {peer}")
                    continue
                step, total = make_peer(peer, w, X, T, "cuda")
                for k in range(WARMUP_STEPS + 2):
                    step(k)
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                losses = []
                start.record()
                for k in range(steps):
                    losses.append(step(k))
                end.record()
                end.synchronize()
                row = {"workload": name, "peer": peer, "ok": True, "step_ms": start.elapsed_time(end) / steps,
                       "loss": total(losses) / steps}
                # 10 steps (~350 launches on W1) stay well inside the device's launch queue, so the
                # host never waits for room in it behind the sleeping kernel.
                row.update(_hygiene(torch, step, 10, cycles))
                rows.append(row)
                del step, total
        res["rows"] = rows
        res["summary"] = summarize(rows)
        res["hygiene_ok"] = all(r["no_host_sync"] and not r["cupy_pool_growth_bytes"] for r in rows
                                if r["peer"] == "sigmoidmlp")
        res["ok"] = res["correct"] and res["hygiene_ok"] and not res["skipped"]
    except Exception as exc:  # the device check goes on with its other parts
        res["error"] = f"{type(exc).__name__}: {exc}"
    res["seconds"] = time.perf_counter() - t_start
    return res


def format_device_part(res: dict[str, Any]) -> str:
    """The part's results as text: the table, then the checks."""
    if "error" in res and "rows" not in res:
        return f"bp_gpu.torch device part: {res['error']}"
    lines = [f"bp_gpu.torch on {res.get('device')}: correctness {res.get('correctness_max_rel')}",
             format_rows(res.get("summary", []))]
    for r in res.get("rows", []):
        lines.append(f"  {r['workload']} {r['peer']}: host {r['host_us_per_step']:.0f} us/step, no host sync "
                     f"{r['no_host_sync']}, CuPy pool growth {r['cupy_pool_growth_bytes']} B")
    if res.get("skipped"):
        lines.append(f"  skipped (budget): {', '.join(res['skipped'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(CPU_WORKLOADS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json", default=None, help="write the rows and the summary here")
    p.add_argument("--interleaved", type=int, default=0, metavar="ROUNDS",
                   help="instead of a fresh process per measurement: all peers in one process, ROUNDS "
                        "alternating blocks of steps each (for a shared machine; use --threads 1)")
    p.add_argument("--phases", type=int, default=0, metavar="ROUNDS",
                   help="instead: where a PyTorch step's time goes (zero_grad, forward + loss, backward, "
                        "opt.step) for sigmoidmlp and torch-eager, ROUNDS alternating blocks")
    p.add_argument("--device", action="store_true", help="run the GPU part (device_part) instead")
    p.add_argument("--budget", type=float, default=300.0, help="seconds for --device")
    p.add_argument("--worker", nargs=2, metavar=("PEER", "WORKLOAD"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        try:
            print(json.dumps(measure_cpu(a.worker[0], a.worker[1], a.threads)), flush=True)
        except Exception as exc:  # reported as a failed row
            print(json.dumps({"peer": a.worker[0], "workload": a.worker[1], "ok": False,
                              "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 0
    if a.device:
        res = device_part(a.budget)
        print(format_device_part(res))
    else:
        info = machine_info()
        print(f"bp_gpu.torch bench  {info['date']}  {info['cpu']}, {info['cores']} cores, {a.threads} threads; "
              f"load {info['load_avg']}", flush=True)
        if a.phases:
            res = {"machine": info, "phases": phases(a.workloads.split(","), a.phases, a.threads)}
            print(format_phases(res["phases"]))
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(res, f, indent=1)
            return 0
        if a.interleaved:
            rows = run_interleaved(a.workloads.split(","), a.interleaved, a.threads)
        else:
            rows = run_cpu(a.workloads.split(","), a.repeats, a.threads)
        res = {"machine": info, "rows": rows, "summary": summarize(rows)}
        print(format_rows(res["summary"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if res.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
