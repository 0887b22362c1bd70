"""One MPI job of tests/test_distributed.py: ``mpiexec -n N python -m mpi4py train_checks.py DIR MODE``.

Reads DIR/data.npz (X, y, shard bounds), fits data-parallel with every optimizer of MODE, and writes
what each rank saw to DIR/rank<r>.npz (numbers) and DIR/rank<r>.json (messages); the test compares
the ranks with each other and with one process stepping on the union of their batches. MODE "full"
adds early stopping, save/load/resume and the input errors (each raised on every rank, so the ranks
stay together from one check to the next).
"""

import json
import sys

import numpy as np
from mpi4py import MPI

import bp_gpu
import bp_gpu.data

out, mode = sys.argv[1], sys.argv[2]
rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
d = np.load(f"{out}/data.npz")
lo, hi = d["bounds"][rank], d["bounds"][rank + 1]
X, y = d["X"][lo:hi], d["y"][lo:hi]
BASE = dict(hidden_layer_sizes=(7,), learning_rate=0.05, batch_size=8, epochs=3, dtype="float64", backend="cpu",
            random_state=3, distributed=True)
OPTIMIZERS = {"sgd": {}, "momentum": {}, "adam": {}, "adamw": {"weight_decay": 0.1}, "lamb": {"weight_decay": 0.1}}
if mode == "quick":
    OPTIMIZERS = {k: OPTIMIZERS[k] for k in ("sgd", "momentum", "adam")}
nums: dict[str, np.ndarray] = {}
msgs: dict[str, str] = {}


def keep(prefix, clf):
    for l, (W, b) in enumerate(clf.net_.get_weights()):
        nums[f"{prefix}/W{l}"], nums[f"{prefix}/b{l}"] = W, b
    nums[f"{prefix}/loss"] = np.array(clf.loss_curve_)
    nums[f"{prefix}/n_iter"] = np.array(clf.n_iter_)
    nums[f"{prefix}/classes"] = clf.classes_
    nums[f"{prefix}/predict"] = clf.predict(d["X"])


for name, extra in OPTIMIZERS.items():
    keep(name, bp_gpu.MLPClassifier(optimizer=name, **BASE, **extra).fit(X, y))

# A data set given as this process's shard (DIR/data.parquet: one row group per rank, the same rows as
# the bounds), standardised with the statistics of every rank's rows, its column names kept.
with bp_gpu.data.open(f"{out}/data.parquet", target="label") as ds, ds.shard(rank, size) as part:
    scaled = bp_gpu.MLPClassifier(optimizer="adam", standardize=True, **BASE).fit(part)
keep("dataset", scaled)
nums["dataset/mean"], nums["dataset/std"] = scaled.feature_mean_, scaled.feature_std_
msgs["dataset/names"] = [str(n) for n in scaled.feature_names_in_]

if mode == "full":
    es = bp_gpu.MLPClassifier(**{**BASE, "epochs": 60}, optimizer="adam", early_stopping=True, n_iter_no_change=2,
                              tol=0.02).fit(X, y)
    keep("early", es)
    nums["early/validation_scores"] = np.array(es.validation_scores_)

    whole = bp_gpu.MLPClassifier(**{**BASE, "epochs": 4}, optimizer="adam").fit(X, y)
    half = bp_gpu.MLPClassifier(**{**BASE, "epochs": 2}, optimizer="adam").fit(X, y)
    half.save(f"{out}/half.npz")  # every rank calls it; rank 0 writes
    resumed = bp_gpu.load(f"{out}/half.npz")
    resumed.partial_fit(X, y, epochs=2)
    keep("whole", whole)
    keep("resumed", resumed)
    resumed.save(f"{out}/resumed.npz")

    first = bp_gpu.MLPClassifier(**BASE, optimizer="adam").partial_fit(X, y, classes=[0, 1, 2], epochs=3)
    keep("partial", first)

    try:  # finite rows whose loss overflows, on rank 1 only: the global loss is not finite
        logistic = bp_gpu.MLPClassifier(**{**BASE, "hidden_layer_sizes": ()}, optimizer="sgd")
        logistic.fit(X * 1e307 if rank == 1 else X, y)
        msgs["diverge"] = "no error"
    except Exception as exc:
        msgs["diverge"] = f"{type(exc).__name__}: {exc}"

    cases = {}
    bad = X.copy()
    if rank == 1:
        bad[5, 2] = np.nan
    cases["nan"] = (bad, y)
    yf = y.astype(float)
    if rank == 2:
        yf[3] = 0.5
    cases["label"] = (X, yf)
    cases["columns"] = (X[:, :4] if rank == 1 else X, y)
    cases["empty"] = (X[:0] if rank == 2 else X, y[:0] if rank == 2 else y)
    for case, (Xc, yc) in cases.items():
        try:
            bp_gpu.MLPClassifier(**BASE).fit(Xc, yc)
            msgs[case] = "no error"
        except Exception as exc:
            msgs[case] = f"{type(exc).__name__}: {exc}"
    try:
        bp_gpu.MLPClassifier(**{**BASE, "batch_size": 9 if rank == 2 else 8}).fit(X, y)
        msgs["params"] = "no error"
    except Exception as exc:
        msgs["params"] = f"{type(exc).__name__}: {exc}"
    before = [w.copy() for pair in whole.net_.get_weights() for w in pair]
    try:
        whole.partial_fit(cases["nan"][0], y)
        msgs["refit"] = "no error"
    except Exception as exc:
        msgs["refit"] = f"{type(exc).__name__}: {exc}"
    after = [w for pair in whole.net_.get_weights() for w in pair]
    msgs["refit_unchanged"] = str(all((a == b).all() for a, b in zip(before, after)) and whole.n_iter_ == 4)

np.savez(f"{out}/rank{rank}.npz", **nums)
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump(msgs, f)
