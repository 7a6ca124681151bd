"""Training loops a method can ask for (objectives). Every trainable method shares them, so budgets
match. One registry like methods and stages: built-ins register with @register_objective; a
third-party package adds one through the `harness.objectives` entry-point group."""

from __future__ import annotations

from harness.plugins import Registry

OBJECTIVES = Registry(
    "objective",
    "harness.objectives",
    builtin_modules=(
        "harness.training.sft",
        "harness.training.classification",
        "harness.training.token_classification",
        "harness.training.extractive_qa",
        "harness.training.multi_task_objective",
    ),
)
register_objective = OBJECTIVES.register


def get_objective(name: str):
    """A fresh objective by name; an unknown name is one HarnessError with "did you mean"."""
    return OBJECTIVES.get(name)()
