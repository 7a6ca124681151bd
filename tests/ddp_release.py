"""Two ranks (under torchrun) train a tiny Llama under DDP with harness's loop and write, per rank,
how many DistributedDataParallel objects were alive when the loop ended the process group
(tests/test_rank_teardown.py). A wrapper freed after its group can hang rank 0 for good."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

from harness.config.schema import Budget
from harness.training import loop

real_destroy = dist.destroy_process_group
alive: list[int] = []


def counting_destroy(*args, **kwargs):
    gc.collect()
    alive.append(sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects()))
    return real_destroy(*args, **kwargs)


dist.destroy_process_group = counting_destroy
torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
)
model = LlamaForCausalLM(config)
rows = torch.randint(0, 64, (16, 8))


def make_batch(indices):
    ids = rows[indices]
    return {"input_ids": ids, "labels": ids}, ids.numel()


consumed, _ = loop.train(
    model,
    n_examples=16,
    ids=[str(i) for i in range(16)],
    make_batch=make_batch,
    budget=Budget(max_steps=2, batch_size=4, max_seq_len=16),
    lr=1e-3,
    loss_items=lambda t: int(t["input_ids"].numel()),
)
record = {"world_size": consumed.extra["devices"]["world_size"], "strategy": consumed.extra["devices"]["strategy"]}
Path(sys.argv[1], f"rank-{os.environ['RANK']}.json").write_text(json.dumps({**record, "alive_at_destroy": alive}))
