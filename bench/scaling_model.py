"""On-paper data-parallel scaling on GPUs: all-reduce time and efficiency per workload and cluster.

``python -m bp_gpu.bench.scaling_model [--step-us W2=980,W3=3850] [--tflops 33.5]`` prints, for the
benchmark workloads, the gradient size, the step time of one GPU (measured with ``--step-us``, e.g.
from ``bench/device_check.py``'s training steps; otherwise FLOPs / ``--tflops``, at least an
eager step's host work), and for 8 GPUs in
a node and 2-16 nodes of 8: the ring all-reduce time and the scaling efficiency without overlap.

The model (NCCL's, nccl-tests doc/PERFORMANCE.md): an all-reduce of S bytes over n ranks moves
2(n-1)/n * S through each rank's link, so t = alpha + 2(n-1)/n * S / B, with B the bus bandwidth
the link sustains and alpha the fixed cost of one collective. Weak scaling (the batch per GPU is
fixed): one step takes t_step + t_allreduce on every GPU and does n times the work, so the
efficiency is t_step / (t_step + t_allreduce). The assumptions, each a constant below, are stated
with their sources in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse

from .workloads import WORKLOADS

# H100/H200 SXM: NVLink 4, 900 GB/s per GPU both directions = 450 GB/s each way (NVIDIA's H100 and
# H200 product pages); NCCL's all-reduce bus bandwidth reaches ~80% of it on large messages.
NVLINK_BUS_GBS = 360.0
# InfiniBand NDR, one 400 Gb/s NIC per GPU = 50 GB/s each way; ~80% as all-reduce bus bandwidth.
IB_BUS_GBS = 40.0
# Fixed cost of one all-reduce (launch + ring/tree latency), the order of nccl-tests' small-message
# times: about 15 us in an NVLink node, 30 us across nodes.
ALPHA_NODE_US = 15.0
ALPHA_NET_US = 30.0
# H100/H200 SXM FP32 (non-tensor) peak 67 TFLOP/s; CuPy's GEMMs run FP32 unless CUPY_TF32=1. Half
# of the peak when no step time is measured.
DEFAULT_TFLOPS = 33.5
# An eager step is never shorter than its host work: ~20 us of prepared kernel launches plus 7 cuBLAS
# calls at ~8 us (the launch-cost estimate for W1 in the project's Numba launch notes).
HOST_FLOOR_US = 80.0
CASES = [("8 GPUs, 1 node (NVLink)", 8, NVLINK_BUS_GBS, ALPHA_NODE_US)] + [
    (f"{m} nodes x 8 (IB NDR)", 8 * m, IB_BUS_GBS, ALPHA_NET_US) for m in (2, 4, 8, 16)
]


def allreduce_us(nbytes: float, n: int, bus_gbs: float, alpha_us: float) -> float:
    return alpha_us + 2 * (n - 1) / n * nbytes / (bus_gbs * 1e3)


def overlapped_us(sizes: tuple[int, ...], step_us: float, n: int, bus_gbs: float, alpha_us: float) -> float:
    """All-reduce time left after the backward pass when each layer's gradient is reduced (one bucket
    per layer, one after another) as soon as backward has produced it; times of the step split in
    proportion to GEMM FLOPs (forward 2, backward 4 per weight and row)."""
    layers = list(zip(sizes[:-1], sizes[1:]))
    unit = step_us / (6 * sum(i * o for i, o in layers))  # us per (weight x row) x 1 FLOP-pair
    t = 2 * unit * sum(i * o for i, o in layers)  # forward done
    comm_free = 0.0
    for l in range(len(layers) - 1, -1, -1):
        i, o = layers[l]
        t += 2 * unit * i * o  # dW_l: this bucket is ready
        start = max(t, comm_free)
        comm_free = start + allreduce_us(4 * (i * o + o), n, bus_gbs, alpha_us)
        if l > 0:
            t += 2 * unit * i * o  # the delta of the layer below
    return max(0.0, comm_free - t)


def rows(step_us: dict[str, float], tflops: float) -> list[dict]:
    out = []
    for name in ("W1", "W2", "W3"):
        w = WORKLOADS[name]
        P = sum(i * o + o for i, o in zip(w.sizes[:-1], w.sizes[1:]))
        flops = w.flops / w.samples * w.batch  # one step of w.batch rows
        t = step_us.get(name, max(HOST_FLOOR_US, flops / (tflops * 1e6)))
        for label, n, bus, alpha in CASES:
            ar = allreduce_us(4 * P, n, bus, alpha)
            exposed = overlapped_us(w.sizes, t, n, bus, alpha)
            out.append({"workload": name, "params": P, "grad_MB": 4 * P / 1e6, "batch_per_gpu": w.batch,
                        "step_us": t, "measured": name in step_us, "cluster": label, "gpus": n,
                        "allreduce_us": ar, "share": ar / (t + ar), "efficiency": t / (t + ar),
                        "exposed_overlapped_us": exposed, "efficiency_overlapped": t / (t + exposed)})
    return out


def format_rows(rs: list[dict]) -> str:
    head = (f"{'workload':8s} {'grad MB':>7s} {'batch/GPU':>9s} {'step us':>8s} {'cluster':25s} "
            f"{'all-reduce us':>13s} {'efficiency':>10s} {'overlapped: exposed us':>22s} {'efficiency':>10s}")
    lines = [head, "-" * len(head)]
    for r in rs:
        step = f"{r['step_us']:.0f}{'' if r['measured'] else '*'}"
        lines.append(f"{r['workload']:8s} {r['grad_MB']:>7.3f} {r['batch_per_gpu']:>9d} {step:>8s} {r['cluster']:25s} "
                     f"{r['allreduce_us']:>13.1f} {r['efficiency']:>10.1%} {r['exposed_overlapped_us']:>22.1f} "
                     f"{r['efficiency_overlapped']:>10.1%}")
    lines.append(f"* not measured: FLOPs at the assumed rate, at least the {HOST_FLOOR_US:.0f} us of host work "
                 "of an eager step")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step-us", default="", help="measured one-GPU step times, e.g. W2=980,W3=3850")
    p.add_argument("--tflops", type=float, default=DEFAULT_TFLOPS, help="assumed rate where no step time is given")
    a = p.parse_args(argv)
    steps = {k: float(v) for k, v in (kv.split("=") for kv in a.step_us.split(",") if kv)}
    print(format_rows(rows(steps, a.tflops)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
