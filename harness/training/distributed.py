"""The arm's devices as the loop sees them: one accelerate.Accelerator per training run, and the
few collectives the loop needs (a no-op on one device).

An arm with `devices: k > 1` runs as k processes under torchrun (harness.execution.launch); here
each finds its rank from the environment torchrun sets. On CPU accelerate only goes distributed
(gloo) when told, so the launcher sets ACCELERATE_USE_CPU=1 (ANCHORS).
"""

from __future__ import annotations

import os

from harness.config.schema import Budget
from harness.errors import HarnessError
from harness.training.mixed_precision import accelerate_mixed_precision, resolve_precision


def world_size() -> int:
    """Processes of this arm (torchrun's WORLD_SIZE; 1 when started plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0: the one process of an arm that evaluates, writes and prints progress."""
    return int(os.environ.get("RANK", "0")) == 0


def make_accelerator(budget: Budget):
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if world_size() == 1:
        # accelerate keeps one state per process and refuses a second precision; an arm process
        # trains once, but tests and benchmarks run several loops with different precisions.
        AcceleratorState._reset_state(reset_partial_state=True)
    precision = resolve_precision(budget.precision)
    if precision == "fp16" and not torch.cuda.is_available():
        # accelerate's CPU autocast is bf16 only: fp16 would silently train in fp32.
        raise HarnessError(
            "budget.precision fp16 needs a CUDA GPU",
            key="budget.precision",
            fix="use bf16 (CPUs with AVX512-BF16 or AMX run it natively) or fp32 on CPU",
        )
    kwargs = {}
    if world_size() > 1 and budget.strategy == "fsdp":
        kwargs["fsdp_plugin"] = fsdp_plugin()
    return Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=accelerate_mixed_precision(precision), **kwargs
    )


def fsdp_plugin():
    """FSDP2, fully sharded: weights, gradients and optimizer state split over the ranks (how a
    7B full fine-tune fits: 16 bytes per parameter / k). Each transformer block is its own unit."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        reshard_after_forward=True,
        auto_wrap_policy="transformer_based_wrap",
        state_dict_type="FULL_STATE_DICT",
        cpu_ram_efficient_loading=False,
    )


def all_ranks_sum(accelerator, values: list[float]) -> list[float]:
    if accelerator.num_processes == 1:
        return values
    import torch

    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def all_ranks_max(accelerator, value: float) -> float:
    import torch

    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())


def gather_from_ranks(accelerator, obj) -> list:
    """[rank 0's obj, rank 1's, ...]; a collective on several ranks."""
    if accelerator.num_processes == 1:
        return [obj]
    import torch

    gathered = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def release(accelerator, wrapped) -> None:
    """After training: every rank waits for the others, then the process group ends, so rank 0
    evaluates alone and the other ranks exit instead of waiting on a collective that would time
    out. An FSDP-sharded model is gathered back whole on every rank first."""
    if accelerator.num_processes == 1:
        return
    import torch

    if accelerator.distributed_type.name == "FSDP":
        full = accelerator.get_state_dict(wrapped)  # collective; the full state on rank 0
        _unshard_in_place(accelerator, wrapped, full)
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def _unshard_in_place(accelerator, wrapped, full: dict) -> None:
    """Replace FSDP2's sharded parameters by plain tensors holding the full values on rank 0, so
    the same module object evaluates like an unsharded one after the process group is gone."""
    import torch

    module = accelerator.unwrap_model(wrapped)
    if accelerator.process_index != 0:
        return
    with torch.no_grad():
        for name, param in list(module.named_parameters()):
            owner, leaf = _owner(module, name)
            value = full[name] if name in full else param.full_tensor()
            setattr(owner, leaf, torch.nn.Parameter(value.to(accelerator.device), requires_grad=param.requires_grad))


def _owner(module, dotted: str):
    *path, leaf = dotted.split(".")
    for part in path:
        module = getattr(module, part)
    return module, leaf
