"""Training throughput from files against the same data in memory, peak memory for a file larger
than that, and ONNX Runtime's predict_proba next to bp_gpu's (issue 10).

    python bench/data_throughput.py [--epochs 6] [--block 3] [--repeats 5] [--dir /tmp/bp_gpu_data_bench]
                                    [--large-gb 2] [--onnx]

Throughput: W1 (``[28, 64, 64, 1]``, batch 1024, 262,144 rows of float32 features, plain SGD lr 0.1,
the bench's data and initial weights), trained with the classifier's epoch loop
(``bp_gpu.train.run_epoch``, a shuffled order every epoch) from three sources:

- ``memory``: the arrays in memory (``ArraySource``, rows gathered from the resident data), what
  ``MLPClassifier.fit(X, y)`` does;
- ``npy``: a memory-mapped ``.npy`` of the same rows (features and the label column), streamed by
  ``bp_gpu.data`` (``DatasetSource``: a reader thread fills shuffle buffers of 4 chunks of ~4 MiB,
  the loop gathers each batch from the buffer), what ``MLPClassifier.fit(bp_gpu.data.open(...))``
  does;
- ``parquet``: the same rows in a Parquet file (pyarrow's defaults: snappy, dictionary encoding
  tried; row groups of 32,768 rows, ~3.7 MB of features), streamed the same way.

A fresh process (``--repeats`` of them) builds one network per mode, from the same initial weights,
and trains ``--epochs`` rounds after a warm-up round (compiling, the page cache); a round is a block
of ``--block`` consecutive epochs of each mode in turn (a short fit: the file sources read each next
epoch's first buffer ahead, as in training, and are closed after their block so that no reading
runs into the next mode's), so the slow and fast periods of a shared machine hit every mode alike.
Per process: each mode's median epoch after the first of a block (steady training) and its median
ratio to the ``memory`` epochs of the same round; the first epoch of a block (the first buffer is
read before the first step, once per fit) and the ratio of whole blocks. The table gives the
medians over the processes.

``--large-gb N``: an N GB ``.npy`` and Parquet file of the same kind of rows (written chunk by chunk
under ``--dir``), one epoch of ``MLPClassifier.fit`` from each, peak resident memory (VmHWM).

``--reader``: each source's batches alone, without training: CPU time (all threads) and wall
time per epoch, the cost of feeding the loop.

``--onnx``: a W1-shaped classifier (trained one epoch), ``predict_proba`` on the 262,144 rows by
bp_gpu (CPU backend) and by ONNX Runtime's CPU provider on the exported model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("memory", "npy", "parquet")
ROW_GROUP = 32_768
NAMES = [f"x{k}" for k in range(28)] + ["label"]


def _w1():
    from bp_gpu.bench.workloads import WORKLOADS, initial_weights, make_data

    w = WORKLOADS["W1"]
    X, T = make_data(w)
    return w, X, T, initial_weights(w)


def prepare(d: str) -> dict[str, str]:
    """The W1 rows as ``w1.npy`` (28 features, then the label) and ``w1.parquet``, once."""
    import numpy as np

    paths = {"npy": os.path.join(d, "w1.npy"), "parquet": os.path.join(d, "w1.parquet")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, X, T, _ = _w1()
    A = np.column_stack([X, T[:, 0]]).astype(np.float32)
    np.save(paths["npy"], A)
    pq.write_table(pa.table({n: A[:, k] for k, n in enumerate(NAMES)}), paths["parquet"], row_group_size=ROW_GROUP)
    return paths


def write_large(d: str, gb: float) -> dict[str, str]:
    """An ``gb`` GB .npy and a Parquet file of W1-like rows, written a block at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = int(gb * 1e9 / (29 * 4))
    paths = {"npy": os.path.join(d, f"large_{gb:g}gb.npy"), "parquet": os.path.join(d, f"large_{gb:g}gb.parquet")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(28).astype(np.float32)
    block = 8 * ROW_GROUP
    mm = np.lib.format.open_memmap(paths["npy"] + ".part", mode="w+", dtype=np.float32, shape=(rows, 29))
    writer = pq.ParquetWriter(paths["parquet"] + ".part", pa.schema([(n, pa.float32()) for n in NAMES]))
    for start in range(0, rows, block):
        n = min(block, rows - start)
        X = rng.standard_normal((n, 28), dtype=np.float32)
        t = ((X @ direction > 0) ^ (rng.random(n) < 0.1)).astype(np.float32)
        mm[start:start + n, :28], mm[start:start + n, 28] = X, t
        writer.write_table(pa.table({**{f"x{k}": X[:, k] for k in range(28)}, "label": t}), row_group_size=ROW_GROUP)
    mm.flush()
    del mm
    writer.close()
    for p in paths.values():
        os.replace(p + ".part", p)
    return paths


# -- measurements, each in a fresh process -------------------------------------------------------------
def _source(mode: str, eng, paths: dict[str, str]):
    """The W1 rows as the epoch loop's batch source: resident arrays, or a data set streamed."""
    import numpy as np
    from bp_gpu.bench.workloads import WORKLOADS, make_data

    import bp_gpu.data as bd
    from bp_gpu.dataset_source import DatasetSource
    from bp_gpu.labels import LabelEncoder
    from bp_gpu.train import ArraySource

    w = WORKLOADS["W1"]
    if mode == "memory":
        X, T = make_data(w)
        return ArraySource(eng, X, T, w.batch, "device")
    ds = bd.open(paths[mode], target=28 if mode == "npy" else "label")
    return DatasetSource(eng, ds, w.batch, n_outputs=1, encode=LabelEncoder("binary", ds.labels(), np.float32))


def child_throughput(modes: list[str], paths: dict[str, str], rounds: int, block: int) -> dict:
    """One process: a network per mode (the same initial weights) and rounds of training, each round
    a fit-like block of ``block`` consecutive epochs of every mode in turn (so slow and fast periods
    of a shared machine hit every mode alike), the file sources closed after their block (so no
    reading ahead runs into another mode's block). The first round warms up (compiling, the page
    cache) and is not counted. Per mode: the median epoch after a block's first (steady training,
    where the reader has read each epoch's first buffer ahead) and the median first epoch (what a
    fit pays once: the first buffer read before the first step)."""
    import numpy as np
    from bp_gpu.bench.workloads import WORKLOADS, initial_weights

    import bp_gpu
    from bp_gpu.optim import SGD
    from bp_gpu.train import run_epoch

    w = WORKLOADS["W1"]
    weights = initial_weights(w)
    runs = {}
    for mode in modes:
        net = bp_gpu.MLP(w.sizes, dtype="float32", backend="cpu")
        net.set_weights(weights)
        eng = net._engine
        eng.ensure_capacity(w.batch)
        source = _source(mode, eng, paths)
        runs[mode] = (net, SGD(net, 0.1), source, np.random.default_rng(0), [], [])
    for _ in range(rounds + 1):
        for mode in modes:
            net, opt, source, rng, blocks, losses = runs[mode]
            times = []
            for _ in range(block):
                t0 = time.perf_counter()
                losses.append(run_epoch(net, opt, source, rng))
                times.append(time.perf_counter() - t0)
            if hasattr(source, "close"):
                source.close()
            blocks.append(times)
    out = {"load": os.getloadavg(), "block": block, "modes": {}}
    for mode in modes:
        blocks, losses = runs[mode][4][1:], runs[mode][5]
        steady = [t for b in blocks for t in b[1:]]
        med = statistics.median(steady)
        out["modes"][mode] = {"epoch_s": med, "min_s": min(steady),
                              "first_epoch_s": statistics.median(b[0] for b in blocks), "blocks": blocks,
                              "samples_per_s": w.samples / med, "loss": losses[-1]}
        if mode != "memory" and "memory" in runs:
            # the same round's blocks, adjacent in time: steady epochs, and the whole block
            mem = runs["memory"][4][1:]
            out["modes"][mode]["ratio_to_memory"] = statistics.median(
                statistics.mean(m[1:]) / statistics.mean(f[1:]) for m, f in zip(mem, blocks))
            out["modes"][mode]["block_ratio_to_memory"] = statistics.median(
                sum(m) / sum(f) for m, f in zip(mem, blocks))
    return out


def child_reader(modes: list[str], paths: dict[str, str], epochs: int) -> dict:
    """The batches alone, without training: CPU seconds (user + system, every thread of the process)
    and wall seconds per epoch of each source, i.e. what feeding the loop costs."""
    import resource

    import numpy as np
    from bp_gpu.bench.workloads import WORKLOADS

    import bp_gpu

    w = WORKLOADS["W1"]
    eng = bp_gpu.MLP(w.sizes, dtype="float32", backend="cpu")._engine
    out: dict = {"load": os.getloadavg(), "modes": {}}
    for mode in modes:
        source = _source(mode, eng, paths)
        rng, cpu, wall = np.random.default_rng(0), [], []
        for _ in range(epochs + 1):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _batch in source.epoch(rng):
                pass
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
            wall.append(t1 - t0)
        out["modes"][mode] = {"cpu_s": statistics.median(cpu[1:]), "wall_s": statistics.median(wall[1:])}
    return out


def child_large(mode: str, path: str) -> dict:
    import numpy as np
    from bp_gpu.bench.worker import status_kb

    import bp_gpu
    import bp_gpu.data as bd

    ds = bd.open(path, target=28 if mode == "npy" else "label")
    rss0 = status_kb("VmRSS")
    clf = bp_gpu.MLPClassifier((64, 64), batch_size=1024, epochs=1, optimizer="sgd", learning_rate=0.1, random_state=0,
                               backend="cpu")
    t0 = time.perf_counter()
    clf.fit(ds)
    seconds = time.perf_counter() - t0
    return {"mode": f"large-{mode}", "file_gb": os.path.getsize(path) / 1e9, "rows": ds.n_rows,
            "fit_s": seconds, "samples_per_s": ds.n_rows / seconds, "loss": clf.loss_curve_[-1],
            "rss_after_imports_mb": rss0 / 1024, "peak_rss_mb": status_kb("VmHWM") / 1024,
            "classes": np.asarray(clf.classes_).tolist()}


def child_onnx(d: str, repeats: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    import bp_gpu

    _, X, T, _ = _w1()
    clf = bp_gpu.MLPClassifier((64, 64), batch_size=1024, epochs=1, optimizer="sgd", learning_rate=0.1, random_state=0,
                               backend="cpu").fit(X, T[:, 0])
    path = os.path.join(d, "w1.onnx")
    clf.to_onnx(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = {"rows": len(X), "ort_threads": sess.get_session_options().intra_op_num_threads}
    ref = clf.predict_proba(X)
    for name, fn in (("bp_gpu", lambda: clf.predict_proba(X)),
                     ("onnxruntime", lambda: sess.run(["probabilities"], {"X": X})[0])):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            P = fn()
            ts.append(time.perf_counter() - t0)
        out[name] = {"median_s": statistics.median(ts), "min_s": min(ts),
                     "rows_per_s": len(X) / statistics.median(ts), "max_abs_diff": float(np.abs(P - ref).max())}
    return out


def _child(args: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6, help="rounds of training blocks after the warm-up round")
    p.add_argument("--block", type=int, default=3, help="consecutive epochs of a mode in a round (a short fit)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", default="/tmp/bp_gpu_data_bench", help="where the generated files go (not the repo)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--large-gb", type=float, default=0.0)
    p.add_argument("--onnx", action="store_true")
    p.add_argument("--reader", action="store_true", help="also the batches alone: CPU and wall time per epoch")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        kind, *rest = a.child
        if kind == "throughput":
            res = child_throughput(rest[0].split(","), json.loads(rest[1]), int(rest[2]), int(rest[3]))
        elif kind == "reader":
            res = child_reader(rest[0].split(","), json.loads(rest[1]), int(rest[2]))
        else:
            res = child_large(rest[0], rest[1]) if kind == "large" else child_onnx(rest[0], int(rest[1]))
        print(json.dumps(res))
        return 0
    os.makedirs(a.dir, exist_ok=True)
    paths = prepare(a.dir)
    results: dict = {"load_start": os.getloadavg(), "throughput": [], "large": [], "onnx": None}
    modes = a.modes.split(",")
    for r in range(a.repeats):
        res = _child(["throughput", ",".join(modes), json.dumps(paths), str(a.epochs), str(a.block)])
        results["throughput"].append(res)
        print(f"process {r + 1}/{a.repeats} (load {res['load'][0]:.2f}): " + ", ".join(
            f"{m} {x['epoch_s'] * 1e3:.1f} ms" + (f" ({x['ratio_to_memory']:.2f}x memory)" if "ratio_to_memory" in x
                                                   else "") for m, x in res["modes"].items()), flush=True)
    if a.repeats:
        print(f"\n{'mode':8s} {'median epoch ms (min-max over processes)':>40s} {'samples/s':>12s} {'x memory':>9s} "
              f"{'first epoch ms':>15s} {'x memory, block of ' + str(a.block):>22s}")
    for m in modes if a.repeats else []:
        xs = [res["modes"][m]["epoch_s"] for res in results["throughput"]]
        ratios = [res["modes"][m].get("ratio_to_memory", 1.0) for res in results["throughput"]]
        firsts = [res["modes"][m]["first_epoch_s"] for res in results["throughput"]]
        blocks = [res["modes"][m].get("block_ratio_to_memory", 1.0) for res in results["throughput"]]
        print(f"{m:8s} {statistics.median(xs) * 1e3:18.1f} ({min(xs) * 1e3:.1f}-{max(xs) * 1e3:.1f}) "
              f"{262_144 / statistics.median(xs):>12,.0f} {statistics.median(ratios):9.2f} "
              f"{statistics.median(firsts) * 1e3:15.1f} {statistics.median(blocks):22.2f}")
    if a.reader:
        res = results["reader"] = _child(["reader", ",".join(modes), json.dumps(paths), str(a.epochs)])
        for m, x in res["modes"].items():
            print(f"batches alone, {m:8s}: {x['cpu_s'] * 1e3:6.1f} ms CPU, {x['wall_s'] * 1e3:6.1f} ms wall per epoch",
                  flush=True)
    if a.large_gb:
        large = write_large(a.dir, a.large_gb)
        for m in ("npy", "parquet"):
            res = _child(["large", m, large[m]])
            results["large"].append(res)
            print(f"large {m}: {res['file_gb']:.2f} GB, {res['rows']:,} rows, one epoch of fit in {res['fit_s']:.1f} s "
                  f"({res['samples_per_s']:,.0f} samples/s), peak RSS {res['peak_rss_mb']:.0f} MB "
                  f"({res['rss_after_imports_mb']:.0f} MB after the imports)", flush=True)
    if a.onnx:
        res = results["onnx"] = _child(["onnx", a.dir, "7"])
        for name in ("bp_gpu", "onnxruntime"):
            r = res[name]
            print(f"predict_proba {name:12s} {r['median_s'] * 1e3:7.1f} ms for {res['rows']:,} rows "
                  f"({r['rows_per_s']:,.0f} rows/s), max |diff| to bp_gpu {r['max_abs_diff']:.1e}")
    results["load_end"] = os.getloadavg()
    print(f"load average: start {results['load_start'][0]:.2f}, end {results['load_end'][0]:.2f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
