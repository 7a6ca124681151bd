"""FSDP2 for one arm (`budget.strategy: fsdp`): torch's `fully_shard` on every transformer block and
on the root, so weights, gradients and AdamW state are split over the arm's ranks.

torch directly, not accelerate: accelerate 1.15 with an FSDP plugin on CPU reports MULTI_CPU and
wraps the model in DDP (STACK_NOTES), so an arm asking for FSDP silently trained unsharded.
`fully_shard` runs the same on gloo (CPU) and NCCL (CUDA), at any world size (1 included: one lent
GPU exercises the sharded path). The loop keeps accelerate for autocast, the fp16 scaler and its
optimizer wrapper; the model itself is never handed to accelerate.

Gradients are reduce-scattered after every micro-batch (FSDP2's default; no `no_sync`), so no rank
ever holds a full-size gradient. With bf16 training the all-gathers and the forward run in bf16 and
gradients are reduced in fp32 (MixedPrecisionPolicy); the sharded master weights stay fp32.

After training, `gather` collects the full state dict to rank 0 (before the process group goes) and
loads it into a plain copy of the model made before sharding (its parameters on the meta device, so
it costs nothing until then); `evaluable(model)` hands that plain model to evaluation, which cannot
use the FSDP module once the group is destroyed (STACK_NOTES).
"""

from __future__ import annotations

import copy
import os
import resource
import weakref
from datetime import timedelta

from harness.training.mixed_precision import upcast_trainable

_GATHERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # sharded module -> its plain copy


def ensure_process_group(timeout_s: float) -> bool:
    """Join the arm's process group with an explicit timeout (a lost rank fails the others after
    timeout_s, not after NCCL's 10 minutes or gloo's 30): torchrun's env:// when it started the
    ranks, else a one-process group, so FSDP at world size 1 takes the same path. Returns True when
    this call created the group (the caller destroys it)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    timeout = timedelta(seconds=timeout_s)
    if "MASTER_ADDR" in os.environ:
        dist.init_process_group(timeout=timeout)  # gloo on CPU, NCCL (+ gloo for objects) on CUDA
    else:
        dist.init_process_group(store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return True


def transformer_blocks(model) -> list:
    """The outermost modules whose class a transformers model names in `_no_split_modules` (its
    decoder/encoder layers): each becomes one FSDP unit, all-gathered only while it computes."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    blocks, prefixes = [], []
    for name, module in model.named_modules():
        if type(module).__name__ in names and not any(name.startswith(p) for p in prefixes):
            blocks.append(module)
            prefixes.append(name + ".")
    return blocks


def plain_skeleton(model):
    """A copy of `model` whose parameters live on the meta device (no memory): what rank 0 loads
    the gathered weights into after training. Buffers are copied (small, some not in a state dict)."""
    import torch

    memo = {
        id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for p in model.parameters()
    }
    return copy.deepcopy(model, memo)


def shard(model, precision: str) -> int:
    """fully_shard every transformer block, then the root. Trainable weights become fp32 master
    weights block by block, just before that block is sharded. Returns the number of blocks."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    blocks = transformer_blocks(model)
    for block in blocks:
        upcast_trainable(block)
        fully_shard(block, mp_policy=policy)
    upcast_trainable(model)
    fully_shard(model, mp_policy=policy)
    return len(blocks)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def rank_report(model, optimizer, blocks: int) -> dict:
    """What this rank holds: how each parameter was split (DTensor local sizes) and the bytes of its
    weights, gradients (its trainable shard) and optimizer state; its peak RSS so far."""
    import torch
    from torch.distributed.tensor import DTensor

    def local(t):
        return t.to_local() if isinstance(t, DTensor) else t

    sharded = unsharded = local_numel = full_numel = state_bytes = 0
    fractions = []
    for p in model.parameters():
        shard_ = local(p)
        if isinstance(p, DTensor):
            sharded += 1
            fractions.append(shard_.numel() / p.numel())
        else:
            unsharded += 1
        local_numel += shard_.numel()
        full_numel += p.numel()
        state_bytes += shard_.numel() * shard_.element_size() * (2 if p.requires_grad else 1)
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                value = local(value)
                state_bytes += value.numel() * value.element_size()
    return {
        "blocks": blocks,
        "sharded_params": sharded,
        "unsharded_params": unsharded,
        "local_numel": local_numel,
        "full_numel": full_numel,
        "min_fraction": round(min(fractions), 6) if fractions else None,
        "max_fraction": round(max(fractions), 6) if fractions else None,
        "state_mb": round(state_bytes / 2**20, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def gather(model, skeleton, device) -> None:
    """A collective: the full state dict on rank 0 (CPU), loaded into its skeleton, which
    `evaluable(model)` then returns. Other ranks only send their shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if skeleton is None:
        return
    skeleton.load_state_dict(full, assign=True)
    _GATHERED[model] = skeleton.to(device)


def evaluable(model):
    """The model evaluation should use: the plain gathered copy of an FSDP-trained model, else itself."""
    return _GATHERED.pop(model, model)
