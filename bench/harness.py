"""``bp-gpu bench``: every peer on every workload, alternating fresh processes, then a report.

For each repeat, the peers of a workload run one after another, each in a fresh worker process
(``bp_gpu.bench.worker``), in an order rotated every repeat so that no peer always follows the
same one. The kernel microbenchmarks (``bp_gpu.bench.micro``) run first, in their own process:
they measure the GEMM ceiling the end-to-end figures are compared with.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .micro import format_micro
from .peers import PEERS
from .report import aggregate, format_table, plot, write_json
from .worker import run_isolated, thread_env
from .workloads import CPU_DEFAULT, GPU_DEFAULT, WORKLOADS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated, of {', '.join(WORKLOADS)} (default: "
                        f"{','.join(CPU_DEFAULT)} without a GPU, {','.join(GPU_DEFAULT)} with one)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help="comma-separated peers (default: all; those that cannot run are skipped)")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per peer and workload (default 5)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for every CPU peer's pools (default: all cores)")
    p.add_argument("--out", default="bench/out", help="directory for results.json and ratios.png (default bench/out)")
    p.add_argument("--quick", action="store_true",
                   help="the tiny 'quick' workload, 2 repeats, small microbenchmarks (smoke test)")
    p.add_argument("--no-micro", action="store_true", help="skip the kernel microbenchmarks")
    p.add_argument("--host-path", action="store_true",
                   help="only the host-path benchmark of the CUDA step (bench/host_path.py: counts and an estimate "
                        "of the host time per step on a device, measured in the simulator; no GPU needed); "
                        "writes host_path.json in --out")
    p.add_argument("--ranks", default=None, metavar="R,R,...",
                   help="instead of the peers: data-parallel scaling, R processes of threads/R threads each "
                        "under mpiexec (default workloads W2,W3cpu; see bench/scaling.py)")


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "python": platform.python_version(),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
    from bp_gpu.backends import cuda_status

    info["cuda"] = cuda_status()[1]
    return info


def _run_json(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any] | None:
    proc = run_isolated(cmd, env, timeout)
    last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    if proc.returncode != 0 or not last:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(cmd[2:])} exited with {proc.returncode}: {tail}")
    return json.loads(last[0])


def run(args: argparse.Namespace) -> int:
    from bp_gpu.backends import cuda_status

    if args.host_path:
        from .host_path import main as host_path

        Path(args.out).mkdir(parents=True, exist_ok=True)
        return host_path(["--json", str(Path(args.out) / "host_path.json")])

    if args.ranks:
        from .scaling import run as run_scaling

        return run_scaling(args)
    gpu = cuda_status()[0] and not os.environ.get("NUMBA_ENABLE_CUDASIM")
    if args.quick:
        workloads, repeats = ["quick"], min(args.repeats, 2)
    else:
        workloads = args.workloads.split(",") if args.workloads else list(GPU_DEFAULT if gpu else CPU_DEFAULT)
        repeats = args.repeats
    peers = [p for p in args.peers.split(",") if p]
    for name, known in (("workload", WORKLOADS), ("peer", PEERS)):
        bad = [x for x in (workloads if name == "workload" else peers) if x not in known]
        if bad:
            raise ValueError(f"unknown {name}(s) {', '.join(bad)}; choose from {', '.join(known)}")
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {repeats}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = thread_env(args.threads)
    py = sys.executable
    info = machine_info()
    print(f"bp-gpu bench  {info['date']}  {info['cpu']}, {info['cores']} cores, {args.threads} threads; "
          f"load {info['load_avg']}; {info['cuda']}", flush=True)
    micro = None
    if not args.no_micro:
        cmd = [py, "-m", "bp_gpu.bench.micro", "--json", str((out / "micro.json").resolve())]
        proc = run_isolated(cmd + (["--quick"] if args.quick else []), env, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(f"microbenchmarks failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        micro = json.loads((out / "micro.json").read_text())
        print(format_micro(micro), flush=True)
    ceiling = micro["gemm_ceiling_GFLOPs"] if micro else None

    # Peers that cannot run here are skipped once, with the reason, instead of per repeat.
    samples: list[dict[str, Any]] = []
    runnable = []
    for p in peers:
        why = PEERS[p].unavailable()
        if why:
            print(f"skip {p}: {why}", flush=True)
            samples += [{"peer": p, "workload": w, "device": PEERS[p].device, "ok": False,
                         "skipped": why} for w in workloads]
        else:
            runnable.append(p)
    for w in workloads:
        for r in range(repeats):
            k = r % max(1, len(runnable))
            for p in runnable[k:] + runnable[:k]:  # rotated: alternate who runs after whom
                try:
                    s = _run_json([py, "-m", "bp_gpu.bench.worker", p, w, "--threads", str(args.threads)],
                                  env, timeout=3600)
                except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                    s = {"peer": p, "workload": w, "device": PEERS[p].device, "ok": False, "error": str(exc)}
                samples.append(s)
                state = f"{s['epoch_s']:.4f} s" if s.get("ok") else f"failed: {s.get('error') or s.get('skipped')}"
                print(f"  {w} repeat {r + 1}/{repeats} {p}: {state}", flush=True)
    rows = aggregate(samples, ceiling)
    table = format_table(rows, ceiling)
    print(table)
    info["load_avg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["blas"] = next((r.get("blas") for r in rows if r.get("blas")), None)
    write_json(out / "results.json", {"machine": info, "threads": args.threads, "repeats": repeats,
                                      "micro": micro, "rows": rows, "samples": samples,
                                      "table": table})
    plot(rows, out / "ratios.png")
    print(f"wrote {out / 'results.json'} and {out / 'ratios.png'}; load at the end {info['load_avg_end']}")
    failed = [s for s in samples if not s.get("ok") and not s.get("skipped")]
    if failed:  # a peer that can run here but did not is a failure, not a row to skip
        first = failed[0]
        print(f"bp-gpu bench: {len(failed)} of {len(samples)} measurements failed; the first, {first['peer']} on "
              f"{first['workload']}: {first.get('error')}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))
