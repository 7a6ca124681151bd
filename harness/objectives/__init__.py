"""Training loops a method can ask for. Every trainable method shares them, so budgets match."""

from __future__ import annotations

import importlib

from harness.errors import HarnessError, did_you_mean

OBJECTIVES = {
    "sft": "harness.objectives.sft:SFTObjective",
    "classification": "harness.objectives.classification:ClassificationObjective",
}


def get_objective(name: str):
    if name not in OBJECTIVES:
        raise HarnessError(f"unknown objective '{name}'", fix=did_you_mean(name, OBJECTIVES))
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)()
