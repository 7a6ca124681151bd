"""Stage registry: `@register_stage("name")` for built-ins, the `harness.stages` entry-point
group for third-party packages, "did you mean" on unknown names.

A stage trains the arm's already wrapped model for its own step budget (budget.stage_steps,
default max_steps) and returns what it consumed, its curves and any metrics it measured. Like
methods, a stage declares every parameter it accepts in `defaults` (its `lr` included).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar

from harness.budget import Consumed
from harness.errors import HarnessError, did_you_mean

BUILTIN_MODULES = ["harness.stages.sft", "harness.stages.dpo", "harness.stages.orpo", "harness.stages.grpo"]
_REGISTRY: dict[str, type["Stage"]] = {}
_loaded = False


@dataclass
class StageContext:
    """What a stage may use: the wrapped model, data, the arm's budget and this stage's steps."""

    model: Any
    tokenizer: Any
    train: list[dict]
    task: dict
    budget: dict                 # the arm's budget with max_steps set to this stage's steps
    method: Any                  # the arm's Method (its objective trains the sft stage)
    kind: str
    method_lr: float
    work_dir: Path
    pairs: Callable[[int], list[dict]]   # pairs(count): `count` training pairs in the budget's seeded order
    on_step: Callable[[int, int, float], None] | None = None

    @property
    def steps(self) -> int:
        return self.budget["max_steps"]


@dataclass
class StageOutcome:
    consumed: Consumed
    curves: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)


class Stage:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    applies_to: ClassVar[frozenset[str]] = frozenset({"causal_lm"})
    preference: ClassVar[bool] = True    # a preference stage: its reference is the model before it
    defaults: ClassVar[dict[str, Any]] = {}

    def check(self, params: dict) -> None:
        """Raise HarnessError for params that cannot work (called by `harness validate`)."""

    def train(self, ctx: StageContext, params: dict) -> StageOutcome:
        raise NotImplementedError


def register_stage(name: str):
    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"stage '{name}' is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group="harness.stages"):
        if ep.name not in _REGISTRY:
            register_stage(ep.name)(ep.load())


def get_stage(name: str) -> Stage:
    _load_all()
    if name not in _REGISTRY:
        raise HarnessError(f"unknown stage '{name}'", fix=did_you_mean(name, _REGISTRY))
    return _REGISTRY[name]()


def stage_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def normalize_stages(spec: list | None) -> list[dict]:
    """`[sft, {dpo: {beta: 0.2}}]` -> [{"name": "sft", "params": {...}}, ...] with defaults
    filled in (the resolved form that enters the arm's hash)."""
    out = []
    for item in spec or []:
        name, given = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        out.append({"name": name, "params": {**get_stage(name).defaults, **(given or {})}})
    return out
