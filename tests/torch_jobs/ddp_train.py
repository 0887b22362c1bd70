"""One process of tests/test_torch_module.py's DistributedDataParallel test (gloo, CPU).

Usage: ``python ddp_train.py RANK WORLD PORT DATA OUT``: trains DDP(SigmoidMLP) with AdamW on
its shard of DATA (rows rank::world of a ``torch.save``d dict with x, t, steps, sizes) and writes its
final parameters to OUT.
"""

import datetime
import faulthandler
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from bp_gpu.torch import SigmoidMLP


def main(rank: int, world: int, port: int, data: str, out: str) -> None:
    faulthandler.dump_traceback_later(100, exit=True)  # a hang shows where, in the test's message
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=90))
    try:
        train(rank, world, data, out)
        dist.barrier()  # both ranks are done with the group before either tears it down
    finally:
        dist.destroy_process_group()


def train(rank: int, world: int, data: str, out: str) -> None:
    """The training, in a function of its own, so that DDP and its reducer are gone before the
    ranks meet at the barrier and destroy the group. Without both, about one run in four hung
    after training: rank 0 blocked in C++ as main()'s locals (the DDP model) were released, after
    destroy_process_group, while rank 1 had exited (faulthandler's dump)."""
    d = torch.load(data)
    model = DDP(SigmoidMLP(d["sizes"], dtype=torch.float64, seed=0))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    x, t = d["x"][rank::world], d["t"][rank::world]
    for _ in range(d["steps"]):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), t).backward()
        opt.step()
    torch.save(model.module.state_dict(), out)


if __name__ == "__main__":
    r, w, p, data, out = sys.argv[1:]
    main(int(r), int(w), int(p), data, out)
