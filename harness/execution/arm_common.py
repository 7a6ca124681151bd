"""What both sides of the process boundary share: the progress events an arm prints and the runner
reads, seeding, and the arm summary every result carries."""

from __future__ import annotations

import json
import random

from harness.training.distributed import is_main_process

EVENT_PREFIX = "@@harness "


def emit(kind: str, **data) -> None:
    """A progress event for the runner; only rank 0 of a multi-device arm speaks, once per step."""
    if is_main_process():
        print(EVENT_PREFIX + json.dumps({"event": kind, **data}), flush=True)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def arm_summary(arm) -> dict:
    return {
        "name": arm.name,
        "method": arm.method,
        "model_key": arm.model_key,
        "model": arm.model.source,
        "kind": arm.model.kind,
        "task_key": arm.task_key,
        "params": arm.params.model_dump(mode="json"),
        "hash": arm.hash,
        "slug": arm.slug,
        "seed": arm.seed,
        **({"tasks": list(arm.tasks)} if getattr(arm, "tasks", None) else {}),
        **({"stages": arm.stages} if getattr(arm, "stages", None) else {}),
    }
