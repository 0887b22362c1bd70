"""One MPI job of tests/test_distributed.py: ``mpiexec -n N python -m mpi4py save_checks.py DIR``.

Saving a data-parallel model is a local call (``torch.save``'s contract): rank 0 alone saves
(``if rank == 0``), a non-zero rank alone saves, and every rank saves to one shared path, each
after the same fit; none of it may wait on the other ranks (a save that did would wait forever for
a rank that is elsewhere: the test's timeout ends the job). Then every rank resumes from the file
rank 1 wrote alone and trains on; DIR/rank<r>.npz gets the weights of that run and of an
uninterrupted one, for the test to compare.
"""

import sys

import numpy as np
from mpi4py import MPI

import bp_gpu

out = sys.argv[1]
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
rng = np.random.default_rng(rank)
X = rng.normal(size=(60 + 7 * rank, 4))
y = (X[:, 0] - X[:, 2] > 0).astype(int)
KW = dict(hidden_layer_sizes=(5,), batch_size=8, backend="cpu", dtype="float64", random_state=1, distributed=True,
          optimizer="adam")

clf = bp_gpu.MLPClassifier(epochs=2, **KW).fit(X, y)
for who, path in ((0, "by_rank0.npz"), (1, "by_rank1.npz")):
    if rank == who:
        clf.save(f"{out}/{path}")  # the others are not in this call: a collective here would hang
comm.Barrier()  # (the test's own synchronisation, not bp_gpu's)
clf.save(f"{out}/shared.npz")  # every rank at once, one path
clf.save(f"{out}/own{rank}.npz")

resumed = bp_gpu.load(f"{out}/by_rank1.npz")
resumed.partial_fit(X, y, epochs=2)
whole = bp_gpu.MLPClassifier(epochs=4, **KW).fit(X, y)
np.savez(f"{out}/rank{rank}.npz", **{f"resumed{k}": a for k, a in enumerate(w for p in resumed.net_.get_weights()
                                                                              for w in p)},
         **{f"whole{k}": a for k, a in enumerate(w for p in whole.net_.get_weights() for w in p)},
         resumed_loss=np.array(resumed.loss_curve_), whole_loss=np.array(whole.loss_curve_))
