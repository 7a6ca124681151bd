"""FSDP2 for one arm (`budget.strategy: fsdp`): torch's `fully_shard` on every transformer block and
on the root, so weights, gradients and AdamW state are split over the arm's ranks.

torch directly, not accelerate: accelerate 1.15 with an FSDP plugin on CPU reports MULTI_CPU and
wraps the model in DDP (STACK_NOTES), so an arm asking for FSDP silently trained unsharded.
`fully_shard` runs the same on gloo (CPU) and NCCL (CUDA), at any world size (1 included: one lent
GPU exercises the sharded path). The loop keeps accelerate for autocast, the fp16 scaler and its
optimizer wrapper; the model itself is never handed to accelerate.

Weights are read once, by rank 0: the other ranks build the model on the meta device (no memory;
harness.models.load_model with weights=False), every rank shards its model, and rank 0 then sends
each tensor in turn, cast to the dtype its shard trains in, from which each rank keeps its slice
(`receive_from_rank0`). So no rank ever holds more than one full tensor it does not own, rank 0
holds the model once in the dtype it was loaded in, and nobody holds the full fp32 model.

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
from dataclasses import dataclass
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


@dataclass
class Layout:
    """How `shard` split the model: FSDP units, and the MB of weights this rank held before sharding
    (on rank 0 the model it read, with any new head or adapters; 0 on a rank that built on meta)."""

    blocks: int
    loaded_mb: float


def shard(model, precision: str) -> Layout:
    """fully_shard every transformer block, then the root; then, over several ranks, rank 0's
    weights into every rank's shards. Trainable weights become fp32 master weights block by block,
    just before that block is sharded."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    loaded_mb = sum(t.numel() * t.element_size() for t in model.parameters() if not t.is_meta) / 2**20
    several = dist.get_world_size() > 1
    source = model.state_dict() if several and dist.get_rank() == 0 else None  # what the others receive
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
    if several:
        receive_from_rank0(model, source)
    return Layout(blocks=len(blocks), loaded_mb=round(loaded_mb, 3))


def receive_from_rank0(model, source: dict | None) -> None:
    """A collective after sharding: every rank's shards and buffers become rank 0's. Rank 0 passes
    its state dict from before sharding (`source`) and sends one tensor at a time; a rank whose
    model is on the meta device allocates its shards first. Rank 0's own shards were cut from its
    weights by fully_shard already."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import distribute_tensor

    rank = dist.get_rank()
    params = dict(model.named_parameters())  # a tied weight once; every one a DTensor (the root is sharded)
    _same_layout_everywhere(params)
    mesh = next(iter(params.values())).device_mesh
    device = torch.device("cuda", torch.cuda.current_device()) if mesh.device_type == "cuda" else torch.device("cpu")
    if any(t.is_meta for t in [*(p.to_local() for p in params.values()), *model.buffers()]):
        model.to_empty(device=device)  # uninitialised memory, every byte of it overwritten below
        params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            if rank == 0:
                full = source[name].to(device=device, dtype=param.dtype)
            else:
                full = torch.empty(param.shape, dtype=param.dtype, device=device)
            dist.broadcast(full, src=0)
            if rank:  # this rank's slice, cut locally (no more traffic)
                mine = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
                param.to_local().copy_(mine.to_local())
        for buffer in model.buffers():  # rotary frequencies and the like, not all in a state dict
            dist.broadcast(buffer, src=0)


def _same_layout_everywhere(params: dict) -> None:
    """A collective: every rank built the same parameters (names, shapes, dtypes), or every rank
    stops with the first difference (instead of a broadcast that waits for a tensor never sent)."""
    import torch.distributed as dist

    layout = [(name, tuple(p.shape), str(p.dtype)) for name, p in params.items()]
    layouts: list = [None] * dist.get_world_size()
    dist.all_gather_object(layouts, layout)
    for rank, other in enumerate(layouts[1:], start=1):
        if other != layouts[0]:
            first = next((a, b) for a, b in zip([*layouts[0], None], [*other, None]) if a != b)
            raise RuntimeError(
                f"rank {rank} built another model than rank 0 (rank 0: {first[0]}, rank {rank}: {first[1]}); "
                "for one, a checkpoint whose tied weights differ loads untied on rank 0 and tied on the others"
            )


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def rank_report(model, optimizer, layout: Layout | None) -> dict:
    """What this rank holds: how each parameter was split (DTensor local sizes) and the bytes of its
    weights, gradients (its trainable shard) and optimizer state; what it read from disk; its peak
    RSS so far."""
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
        "blocks": layout.blocks if layout else 0,
        "loaded_mb": layout.loaded_mb if layout else None,
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
