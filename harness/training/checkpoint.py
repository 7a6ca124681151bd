"""Checkpoints inside an arm: everything the loop needs to go on from step k as if it had never
stopped, in one file per checkpoint under OUT_DIR/checkpoints.

A checkpoint holds the TRAINABLE weights only (a LoRA arm's adapters, a full fine-tune's whole
model: the frozen base is reloaded from its folder anyway), the optimizer and scheduler states,
every RNG state (python, numpy, torch, CUDA; one set per rank), the step and what was consumed
so far. It is written to a temporary name and renamed, so a kill mid-write leaves the previous
checkpoint intact; the newest KEEP are kept. A checkpoint that cannot be read (a torn disk, a
truncated copy) is skipped for the one before it, with a warning.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Callable

from harness.config.schema import Budget
from harness.errors import notices

FOLDER = "checkpoints"
KEEP = 2
FORMAT = 1
FOLDER_ENV = "HARNESS_CHECKPOINTS"  # set by the Ray executor for an arm over several nodes
NONE = "none"


def folder_for(out_dir: Path) -> Path | None:
    """Where the arm checkpoints: OUT_DIR/checkpoints, unless its executor named another folder in
    HARNESS_CHECKPOINTS (an FSDP arm over several nodes: the shared folder in executor.storage that
    every rank reads and writes) or `none` (an arm over several nodes without executor.storage:
    nothing would ever read its checkpoints, so none are written)."""
    named = os.environ.get(FOLDER_ENV)
    if not named:
        return out_dir / FOLDER
    return None if named == NONE else Path(named)


def default_interval(max_steps: int) -> int:
    """Arms planning more than 200 optimizer steps checkpoint every 10% of them; shorter arms
    lose little by starting again and skip the cost."""
    return max(1, max_steps // 10) if max_steps > 200 else 0


def interval(budget: Budget, total_steps: int) -> int:
    """Optimizer steps between checkpoints (0: none): budget.checkpoint_every, else the default."""
    every = budget.checkpoint_every
    return default_interval(total_steps) if every is None else int(every)


def rng_state() -> dict:
    """Every RNG the loop draws from, in types torch.load(weights_only=True) reads back."""
    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_state_bytes() -> bytes:
    """rng_state() serialised, for sending to rank 0: torch 2.13's all_gather_object cannot
    unpickle the tensors inside (AttributeError: UntypedStorage has no attribute dtype)."""
    import torch

    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    return buffer.getvalue()


def rng_state_from_bytes(blob: bytes) -> dict:
    import torch

    return torch.load(io.BytesIO(blob), weights_only=True)


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save(folder: Path, step: int, payload: dict) -> Path:
    """Write checkpoint `step` atomically, then prune all but the newest KEEP."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = folder / f".{path.name}.tmp"
    torch.save({"format": FORMAT, "step": step, **payload}, tmp)
    os.replace(tmp, path)
    for old in sorted(folder.glob("step-*.pt"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


PAYLOAD = ("step", "seconds", "trainable", "optimizer", "scheduler", "rng", "consumed", "curves")


def load_latest(folder: Path, fits: Callable[[dict], str | None] | None = None) -> dict | None:
    """The newest readable checkpoint, or None. One that cannot be read (torn, truncated), or that
    reads but does not hold what the loop restores (`fits` names what is wrong: another model's
    weights, a missing key), is skipped for the one before it; the console is told which and where
    the arm starts (harness.errors.notices)."""
    import torch

    paths = sorted(folder.glob("step-*.pt"), reverse=True)
    for skipped, path in enumerate(paths):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            problem = _payload_problem(state) or (fits(state) if fits else None)
            if problem:
                raise ValueError(problem)
        except Exception as err:  # torn or truncated file: fall back to the previous checkpoint
            warnings.warn(
                f"skipping unreadable checkpoint {path} ({type(err).__name__}: {str(err)[:200]}); "
                "trying the one before it",
                stacklevel=2,
            )
            continue
        if skipped:
            notices.warning(f"{skipped} of {len(paths)} checkpoints unreadable: resuming from step {state['step']}")
        return state
    if paths:
        notices.warning(f"all {len(paths)} checkpoint(s) unreadable: starting from step 0 (why: in log.txt)")
    return None


def _payload_problem(state) -> str | None:
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a checkpoint"
    if state.get("format") != FORMAT:
        return f"format {state.get('format')} (expected {FORMAT})"
    missing = [key for key in PAYLOAD if key not in state]
    return f"lacks {', '.join(missing)}" if missing else None


def discard(folder: Path) -> None:
    """A finished arm keeps no checkpoints: its result is what a rerun reuses."""
    for path in list(folder.glob("step-*")) + list(folder.glob(".step-*.tmp")):
        if path.is_dir():  # an FSDP arm's sharded checkpoint (harness.training.sharded_checkpoint)
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
