"""Training loops a method can ask for. Every trainable method shares them, so budgets match."""

from __future__ import annotations

import importlib

from harness.errors import HarnessError, did_you_mean

OBJECTIVES = {
    "sft": "harness.training.sft:SFTObjective",
    "classification": "harness.training.classification:ClassificationObjective",
    "token_classification": "harness.training.token_classification:TokenClassificationObjective",
    "extractive_qa": "harness.training.extractive_qa:ExtractiveQAObjective",
    "multi_task": "harness.training.multi_task_objective:MultiTaskObjective",
}


def get_objective(name: str):
    if name not in OBJECTIVES:
        raise HarnessError(f"unknown objective '{name}'", fix=did_you_mean(name, OBJECTIVES))
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)()
