"""Zero-shot and few-shot prompting: the base model as it is, no training."""

from __future__ import annotations

import random

from pydantic import Field

from harness.methods.registry import ArmContext, Method, register
from harness.plugins import Params


@register("zero_shot")
class ZeroShot(Method):
    description = "the base decoder prompted with the task instruction; nothing is trained"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "none"}


@register("few_shot")
class FewShot(Method):
    description = "k seeded training examples shown in the prompt before each test input"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "none"}

    class Params(Params):
        k: int = Field(4, ge=1, description="in-context examples shown before each test input")
        balanced: bool = Field(True, description="classification: round-robin over labels")

    def shots(self, params: Params, train: list[dict], ctx: ArmContext) -> list[dict]:
        rng = random.Random(ctx.seed)
        k = params.k
        if not (params.balanced and ctx.task_type == "classification"):
            return rng.sample(train, min(k, len(train)))
        # Round-robin over labels so a 4-shot prompt never shows one label only.
        by_label: dict[str, list[dict]] = {}
        for example in train:
            by_label.setdefault(example["label"], []).append(example)
        pools = [rng.sample(items, len(items)) for _, items in sorted(by_label.items())]
        picked = [pool[i] for i in range(k) for pool in pools if i < len(pool)][:k]
        rng.shuffle(picked)
        return picked
