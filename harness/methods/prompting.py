"""Zero-shot and few-shot prompting: the base model as it is, no training."""

from __future__ import annotations

import random

from harness.methods.registry import ArmContext, Method, register


@register("zero_shot")
class ZeroShot(Method):
    description = "the base decoder prompted with the task instruction; nothing is trained"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "none"}
    defaults: dict = {}


@register("few_shot")
class FewShot(Method):
    description = "k seeded training examples shown in the prompt before each test input"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "none"}
    defaults = {"k": 4, "balanced": True}

    def shots(self, params: dict, train: list[dict], ctx: ArmContext) -> list[dict]:
        rng = random.Random(ctx.seed)
        k = int(params["k"])
        if not (params["balanced"] and ctx.task_type == "classification"):
            return rng.sample(train, min(k, len(train)))
        # Round-robin over labels so a 4-shot prompt never shows one label only.
        by_label: dict[str, list[dict]] = {}
        for example in train:
            by_label.setdefault(example["label"], []).append(example)
        pools = [rng.sample(items, len(items)) for _, items in sorted(by_label.items())]
        picked = [pool[i] for i in range(k) for pool in pools if i < len(pool)][:k]
        rng.shuffle(picked)
        return picked
