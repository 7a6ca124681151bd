"""Two ranks (under torchrun) train the tiny Llama (argv[2]) under DDP with harness's loop and
write, per rank, how many DistributedDataParallel objects were alive when the loop ended the
process group (tests/test_rank_teardown.py). A wrapper freed after its group can hang rank 0."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from tests.test_training_loop import train_tiny_llama

real_destroy = dist.destroy_process_group
alive: list[int] = []


def counting_destroy(*args, **kwargs):
    gc.collect()
    alive.append(sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects()))
    return real_destroy(*args, **kwargs)


dist.destroy_process_group = counting_destroy
_, consumed, _, _ = train_tiny_llama(sys.argv[2])  # 3 steps, micro-batches of 2 split over the ranks
record = {"world_size": consumed.extra["devices"]["world_size"], "strategy": consumed.extra["devices"]["strategy"]}
Path(sys.argv[1], f"rank-{os.environ['RANK']}.json").write_text(json.dumps({**record, "alive_at_destroy": alive}))
