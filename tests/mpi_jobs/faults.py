"""One MPI job of tests/test_distributed.py, run as a plain script (``mpiexec -n 2 python faults.py DIR
MODE``, not ``python -m mpi4py``): bp_gpu itself must end the job. At the end of epoch 2, rank 1
``raise``s, is ``kill``ed (SIGKILL), or ``hang``s (sleeps: the others' next collective times out).
MODE ``uncaught``: rank 1 raises after fit, at the top level of the script, while rank 0 fits
again. MODE ``interrupt``: trains for long with a checkpoint every epoch and writes DIR/checkpointed after the
first one; the test then sends SIGINT to mpiexec.
"""

import os
import signal
import sys
import time

import numpy as np
from mpi4py import MPI

import bp_gpu

out, mode = sys.argv[1], sys.argv[2]
rank = MPI.COMM_WORLD.Get_rank()
rng = np.random.default_rng(rank)
X = rng.normal(size=(300, 6))
y = (X[:, 0] > 0).astype(int)


class Monitor:
    def on_epoch(self, info):
        if mode == "interrupt":
            info.model().save(f"{out}/checkpoint.npz")  # collective: every rank calls it
            if rank == 0 and info.epoch == 1:
                open(f"{out}/checkpointed", "w").close()
        elif info.epoch == 2 and rank == 1:
            if mode == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "hang":
                time.sleep(600)


epochs = {"interrupt": 100_000, "uncaught": 2}.get(mode, 10)
clf = bp_gpu.MLPClassifier(hidden_layer_sizes=(8,), batch_size=16, epochs=epochs, backend="cpu", random_state=0,
                           distributed=True).fit(X, y, monitor=Monitor())
if mode == "uncaught":  # outside any bp_gpu call: the excepthook bp_gpu installed must end the job
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose, outside fit")
    clf.fit(X, y)  # rank 0 waits for rank 1 in here
print("finished", flush=True)
