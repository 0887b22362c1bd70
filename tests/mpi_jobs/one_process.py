"""One MPI job of tests/test_distributed.py: ``mpiexec -n 1 python -m mpi4py one_process.py DIR``.

Under mpiexec with a world of one process, ``distributed=True`` must train exactly as plain training:
arrays with early stopping and standardisation, a data set (streamed), partial_fit, save and resume.
Writes every model's weights and curves to DIR/<case>_<distributed>.npz for the test to compare with
the same script's plain run (``python one_process.py DIR plain``).
"""

import sys

import numpy as np

import bp_gpu
import bp_gpu.data

out = sys.argv[1]
distributed = len(sys.argv) < 3  # ``plain`` as the second argument: distributed=False
rng = np.random.default_rng(0)
X = rng.normal(size=(150, 4))
y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
KW = dict(hidden_layer_sizes=(6,), batch_size=16, backend="cpu", dtype="float64", random_state=2, optimizer="adam",
          distributed=distributed)
tag = "dp" if distributed else "plain"


def keep(case, clf):
    arrays = {f"w{k}": a for k, a in enumerate(w for p in clf.net_.get_weights() for w in p)}
    np.savez(f"{out}/{case}_{tag}.npz", loss=np.array(clf.loss_curve_), **arrays,
             val=np.array(getattr(clf, "validation_scores_", [])))


keep("early", bp_gpu.MLPClassifier(epochs=8, early_stopping=True, n_iter_no_change=3, standardize=True,
                                   **KW).fit(X, y))
ds = bp_gpu.data.from_arrays(X, y, chunk_rows=40)
keep("dataset", bp_gpu.MLPClassifier(epochs=3, **KW).fit(ds))
half = bp_gpu.MLPClassifier(epochs=2, **KW).partial_fit(X, y, classes=["no", "yes"], epochs=2)
half.save(f"{out}/half_{tag}.npz")
resumed = bp_gpu.load(f"{out}/half_{tag}.npz").partial_fit(X, y, epochs=2)
keep("resumed", resumed)
print("done", flush=True)
