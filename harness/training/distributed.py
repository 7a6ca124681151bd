"""The arm's devices as the loop sees them: one accelerate.Accelerator per training run, and the
few collectives the loop needs (a no-op on one device).

An arm with `devices: k > 1` runs as k processes under torchrun (harness.execution.launch); here
each finds its rank from the environment torchrun sets. On CPU accelerate only goes distributed
(gloo) when told, so the launcher sets ACCELERATE_USE_CPU=1 (ANCHORS). The process group is joined
here, with budget.dist_timeout_s, before accelerate sees it. FSDP is not accelerate's: see
harness.training.fsdp.
"""

from __future__ import annotations

import os

from harness.config.schema import Budget
from harness.errors import HarnessError
from harness.training.fsdp import ensure_process_group
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
    if world_size() > 1 or budget.strategy == "fsdp":
        ensure_process_group(budget.dist_timeout_s)  # before accelerate, which then uses it
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=accelerate_mixed_precision(precision))


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


def release() -> None:
    """After training: every rank waits for the others, then the process group ends, so rank 0
    evaluates alone and the other ranks exit instead of waiting on a collective that would time
    out. (An FSDP-trained model was gathered to rank 0 before: harness.training.fsdp.)"""
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
