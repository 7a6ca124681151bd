"""Checkpoints of an FSDP arm, with torch.distributed.checkpoint (DCP): every rank writes its own
shards of the weights and AdamW state, so no rank ever gathers the full model to checkpoint it.

One checkpoint is a folder `OUT_DIR/checkpoints/step-00000010/`: DCP's files (one per rank and a
`.metadata`) plus `loop.pt` from rank 0 (scheduler, step, consumed, curves, seconds, scaler, the
RNG states of every rank, the world size). It is written as `.step-00000010.tmp/` and renamed by
rank 0 once DCP reports every rank's files written, so a checkpoint is complete or absent; the
newest KEEP are kept. A checkpoint is resumed at the world size that wrote it: DCP could reshard
the weights, but each rank's RNG state and share of every batch belong to that world size, and a
different device count is a different arm (its hash) anyway.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

from harness.errors import HarnessError
from harness.training.checkpoint import FORMAT, KEEP

LOOP_STATE = "loop.pt"


def _raw(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer


def save(folder: Path, step: int, model, optimizer, payload: dict, rank: int) -> dict:
    """A collective: every rank writes its shards. Returns what it cost (seconds, MB on disk)."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    started = time.perf_counter()
    final = folder / f"step-{step:08d}"
    tmp = folder / f".{final.name}.tmp"
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a write a kill interrupted
    dist.barrier()
    model_state, optim_state = get_state_dict(model, _raw(optimizer))
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp)  # returns once all ranks wrote
    size = 0
    if rank == 0:
        torch.save({"format": FORMAT, "step": step, **payload}, tmp / LOOP_STATE)
        size = sum(p.stat().st_size for p in tmp.iterdir())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(folder.glob("step-*/"))[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return {"seconds": time.perf_counter() - started, "mb": size / 2**20}


def load_latest(folder: Path, world: int) -> dict | None:
    """The newest complete checkpoint's loop state (with its `path`), or None. One written by
    another number of ranks is refused with a sentence."""
    import torch

    for path in sorted(folder.glob("step-*/"), reverse=True):
        try:
            state = torch.load(path / LOOP_STATE, map_location="cpu", weights_only=True)
            if state.get("format") != FORMAT or not (path / ".metadata").is_file():
                raise ValueError("incomplete or of another format")
        except Exception as err:  # torn or truncated: the one before it
            reason = f"{type(err).__name__}: {str(err)[:200]}"
            warnings.warn(f"skipping unreadable checkpoint {path} ({reason})", stacklevel=2)
            continue
        if state["world_size"] != world:
            raise HarnessError(
                f"the checkpoint {path} was written by {state['world_size']} ranks and this arm runs on {world}",
                key="budget.devices",
                fix=f"resume it on {state['world_size']} devices, or delete {folder} to start the arm again",
            )
        return {**state, "path": path}
    return None


def restore(path: Path, model, optimizer) -> None:
    """A collective: each rank reads its shards of the weights and optimizer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, _raw(optimizer))
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, _raw(optimizer), model_state_dict=state["model"], optim_state_dict=state["optim"])
