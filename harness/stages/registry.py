"""Stage registry: `@register_stage("name")` for built-ins, the `harness.stages` entry-point
group for third-party packages, "did you mean" on unknown names.

A stage trains the arm's already wrapped model for its own step budget (budget.stage_steps,
default max_steps) and returns what it consumed, its curves and any metrics it measured. Like
methods, a stage declares every parameter it accepts in a pydantic `Params` (its `lr` included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic import Field

from harness.config.schema import Budget
from harness.plugins import Params, Plugin, Registry
from harness.training.consumed import Consumed

BUILTIN_MODULES = [
    "harness.stages.sft",
    "harness.stages.cpt",
    "harness.stages.dpo",
    "harness.stages.orpo",
    "harness.stages.grpo",
    "harness.stages.reward_model",
    "harness.stages.rft",
]


@dataclass
class StageContext:
    """What a stage may use: the wrapped model, data, the arm's budget and this stage's steps."""

    model: Any
    tokenizer: Any
    train: list[dict]
    task: dict
    budget: Budget  # the arm's budget with max_steps set to this stage's steps
    method: Any  # the arm's Method (its objective trains the sft stage)
    kind: str
    method_lr: float
    work_dir: Path
    pairs: Callable[[int], list[dict]]  # pairs(count): `count` training pairs in the budget's seeded order
    on_step: Callable[[int, int, float], None] | None = None
    base_dir: Path | None = None  # the experiment file's folder: relative paths in params
    held_out: list[dict] = field(default_factory=list)  # held-out pairs (test split), budget.alignment.eval_pairs
    arm_dir: Path | None = None  # the arm's folder in the run: what a stage keeps (a reward model)
    model_dir: Path | None = None  # the arm's base model folder (a reward model is built from it)
    method_params: Params | None = None  # the arm's method's validated Params

    @property
    def steps(self) -> int:
        return self.budget.max_steps


@dataclass
class StageOutcome:
    consumed: Consumed
    curves: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)  # intervals of some of the metrics


class StageParams(Params):
    lr: float = Field(5e-5, gt=0, description="learning rate of this stage")
    beta: float = Field(0.1, gt=0, description="strength of the preference term")


class Stage(Plugin):
    applies_to: ClassVar[frozenset[str]] = frozenset({"causal_lm"})
    preference: ClassVar[bool] = True  # a preference stage: its reference is the model before it

    def train(self, ctx: StageContext, params: Params) -> StageOutcome:
        """Train ctx.model for ctx.steps; `params` is this stage's validated Params (`params.beta`)."""
        raise NotImplementedError

    def problem(self, params: dict, base_dir: Path) -> tuple[str, str, str] | None:
        """(param key, problem, fix) found at `harness validate` beyond the Params types (a missing
        file); `params` are the keys as the user gave them."""
        return None

    def steps_for(self, params: Params, budget) -> int | None:
        """Steps the params ask for (cpt's token budget); None: budget.stage_steps / max_steps."""
        return None


STAGES = Registry("stage", "harness.stages", BUILTIN_MODULES, base=Stage)


def register_stage(name: str):
    return STAGES.register(name)


def get_stage(name: str) -> Stage:
    return STAGES.get(name)()


def stage_names() -> list[str]:
    return STAGES.names()


def stage_entry(item) -> tuple[str, dict | None]:
    """One entry of an arm's `stages:` as written (`sft` or `{dpo: {beta: 0.2}}`) -> (name, params given)."""
    return (item, {}) if isinstance(item, str) else next(iter(item.items()))


def normalize_stages(spec: list | None) -> list[dict]:
    """`[sft, {dpo: {beta: 0.2}}]` -> [{"name": "sft", "params": {...}}, ...] with defaults
    filled in (the resolved form that enters the arm's hash)."""
    out = []
    for item in spec or []:
        name, given = stage_entry(item)
        out.append({"name": name, "params": get_stage(name).Params.model_validate(given or {}).model_dump(mode="json")})
    return out
