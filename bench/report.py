"""Aggregate worker results and present them: terminal table, JSON, PNG bar chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .peers import REFERENCE
from .workloads import WORKLOADS


def aggregate(samples: list[dict[str, Any]], ceiling_gflops: float | None) -> list[dict[str, Any]]:
    """One row per (workload, peer): median epoch time with min-max over the repeats, throughput,
    ratio to the reference peer of the same device, fraction of the GEMM ceiling."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in samples:
        key = (s["workload"], s["peer"])
        row = rows.setdefault(key, {"workload": s["workload"], "peer": s["peer"],
                                    "device": s.get("device"), "times": [], "errors": []})
        if s.get("ok"):
            row["times"].append(s["epoch_s"])
            for k in ("loss", "warmup_s", "peak_rss_mb", "epoch_extra_mb", "needed_mb", "blas"):
                if s.get(k) is not None:
                    row.setdefault(k + "_all", []).append(s[k])
        elif s.get("skipped"):
            row["skipped"] = s["skipped"]
        else:
            row["errors"].append(s.get("error") or "failed")
    out = []
    for (wname, _), row in rows.items():
        w = WORKLOADS[wname]
        if row["times"]:
            med = statistics.median(row["times"])
            row.update(median_s=med, min_s=min(row["times"]), max_s=max(row["times"]),
                       samples_per_s=w.samples / med, gflops=w.flops / med / 1e9)
            row["ceiling_frac"] = row["gflops"] / ceiling_gflops if ceiling_gflops else None
            for k in ("loss", "warmup_s", "peak_rss_mb", "epoch_extra_mb", "needed_mb"):
                vals = row.pop(k + "_all", None)
                row[k] = statistics.median(vals) if vals else None
            row["blas"] = (row.pop("blas_all", None) or [None])[0]
        out.append(row)
    for row in out:
        ref = next((r for r in out if r["workload"] == row["workload"]
                    and r["peer"] == REFERENCE.get(row["device"] or "cpu") and r.get("median_s")), None)
        row["ratio"] = ref["median_s"] / row["median_s"] if ref and row.get("median_s") else None
    return out


def format_table(rows: list[dict[str, Any]], ceiling_gflops: float | None) -> str:
    head = (f"{'workload':8s} {'peer':19s} {'epoch s (min-max)':>24s} {'samples/s':>11s} "
            f"{'x ref':>6s} {'GFLOP/s':>8s} {'of ceil':>7s} {'warm-up s':>9s} {'peak MB':>8s} "
            f"{'epoch +MB':>9s} {'loss':>9s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r.get("median_s"):
            why = f"failed: {r['errors'][0]}" if r["errors"] else f"skipped: {r.get('skipped', 'no result')}"
            lines.append(f"{r['workload']:8s} {r['peer']:19s} {why}")
            continue
        span = f"{r['median_s']:.4f} ({r['min_s']:.4f}-{r['max_s']:.4f})"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        frac = f"{r['ceiling_frac']:.0%}" if r["ceiling_frac"] is not None else "-"
        extra = f"{r['epoch_extra_mb']:.1f}" if r["epoch_extra_mb"] is not None else "-"
        lines.append(
            f"{r['workload']:8s} {r['peer']:19s} {span:>24s} {r['samples_per_s']:11,.0f} {ratio:>6s} "
            f"{r['gflops']:8.1f} {frac:>7s} {r['warmup_s']:9.2f} {r['peak_rss_mb']:8.0f} "
            f"{extra:>9s} {r['loss']:9.6f}")
    refs = ", ".join(f"{d}: {p}" for d, p in REFERENCE.items())
    lines.append(f"x ref = throughput / the reference peer's on the same device ({refs}); "
                 f"of ceil = GFLOP/s (6*samples*sum(fan_in*fan_out) per epoch) / "
                 f"{ceiling_gflops or float('nan'):.0f} GFLOP/s measured GEMM ceiling; "
                 "epoch +MB = peak RSS during the timed epoch above the RSS before it")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1, default=str))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Bars of throughput relative to the reference peer, grouped by workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    peers = list(dict.fromkeys(r["peer"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(workloads) * max(1, len(peers)) / 3), 4))
    width = 0.8 / max(1, len(peers))
    for k, peer in enumerate(peers):
        vals = [next((r["ratio"] or 0 for r in rows if r["workload"] == w and r["peer"] == peer), 0)
                for w in workloads]
        xs = [i + (k - (len(peers) - 1) / 2) * width for i in range(len(workloads))]
        bars = ax.bar(xs, vals, width, label=peer)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v else "" for v in vals], fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("throughput / PyTorch eager (same device)")
    ax.set_title("One training epoch, float32, plain SGD (higher is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
