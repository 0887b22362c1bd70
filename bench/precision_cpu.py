"""What the CPU's emulation of mixed precision costs: ``MLP.train_step`` in "tf32" and "bf16" against
"highest" on the benchmark's workloads, interleaved in one process.

``python -m bp_gpu.bench.precision_cpu [--workloads W1,W2,W3cpu] [--rounds 7] [--steps 4]`` prints,
per workload, the best time of ``steps`` steps of each precision over ``rounds`` rounds, the three
precisions taking turns within every round (so a machine whose load changes from minute to minute,
like the shared 2-core one of bench/RESULTS.md, slows them alike), and each one's ratio to
"highest". The epoch-level rows beside PyTorch (``torch.autocast("cpu", dtype=torch.bfloat16)``)
are ``bp-gpu bench``'s peers ``bp_gpu-step-cpu-bf16``/``-tf32`` and ``torch-eager-bf16``.
"""

from __future__ import annotations

import argparse
import time

PRECISIONS = ("highest", "tf32", "bf16")


def emulation_cost(workload: str, rounds: int = 7, steps: int = 4) -> dict[str, float]:
    """Best seconds per step of each precision (see the module docstring)."""
    from bp_gpu import MLP, optim

    from .workloads import WORKLOADS, initial_weights, make_data

    w = WORKLOADS[workload]
    X, T = make_data(w)
    B = min(w.batch, w.samples)
    Xb, Tb = X[:B], T[:B]
    nets = {}
    for p in PRECISIONS:
        net = MLP(w.sizes, precision=p, backend="cpu")
        net.set_weights(initial_weights(w))
        nets[p] = (net, optim.SGD(net, 0.1))
        float(net.train_step(Xb, Tb, nets[p][1]))  # compile and warm the buffers
    best = dict.fromkeys(PRECISIONS, float("inf"))
    for r in range(rounds):
        for p in PRECISIONS[r % 3 :] + PRECISIONS[: r % 3]:  # rotate who goes first
            net, opt = nets[p]
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = net.train_step(Xb, Tb, opt)
            float(loss)
            best[p] = min(best[p], (time.perf_counter() - t0) / steps)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="W1,W2,W3cpu")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    print(f"{'workload':9s} {'precision':9s} {'ms/step':>9s} {'x highest':>9s}")
    for w in args.workloads.split(","):
        best = emulation_cost(w, args.rounds, args.steps)
        for p in PRECISIONS:
            print(f"{w:9s} {p:9s} {1e3 * best[p]:9.2f} {best[p] / best['highest']:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
