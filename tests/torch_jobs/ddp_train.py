"""One process of tests/test_torch_module.py's DistributedDataParallel test (gloo, CPU).

Usage: ``python ddp_train.py RANK WORLD PORT DATA OUT``: trains DDP(SigmoidMLP) with AdamW on
its shard of DATA (rows rank::world of a ``torch.save``d dict with x, t, steps, sizes) and writes its
final parameters to OUT.
"""

import datetime
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from bp_gpu.torch import SigmoidMLP


def main(rank: int, world: int, port: int, data: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=90))
    try:
        d = torch.load(data)
        model = DDP(SigmoidMLP(d["sizes"], dtype=torch.float64, seed=0))
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
        x, t = d["x"][rank::world], d["t"][rank::world]
        for _ in range(d["steps"]):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(x), t).backward()
            opt.step()
        torch.save(model.module.state_dict(), out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    r, w, p, data, out = sys.argv[1:]
    main(int(r), int(w), int(p), data, out)
