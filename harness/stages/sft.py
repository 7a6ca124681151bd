"""The sft stage: the arm's method objective (the shared hand-written loop) for the stage's steps."""

from __future__ import annotations

from pydantic import Field

from harness.plugins import Params
from harness.stages.registry import Stage, StageContext, StageOutcome, register_stage


@register_stage("sft")
class SFT(Stage):
    description = "supervised fine-tuning with the shared loop (the method's objective); lr: the arm's lr"
    applies_to = frozenset({"causal_lm", "encoder"})
    preference = False

    class Params(Params):
        lr: float | None = Field(None, gt=0, description="learning rate; default: the arm's (method's) lr")

    def train(self, ctx: StageContext, params: Params) -> StageOutcome:
        from harness.training import get_objective

        objective = get_objective(ctx.method.objective_for(ctx.kind))
        lr = params.lr if params.lr is not None else ctx.method_lr
        consumed, curve = objective.train(
            ctx.model, ctx.tokenizer, ctx.train, ctx.task, ctx.budget, lr, on_step=ctx.on_step
        )
        return StageOutcome(consumed, {"train_loss": curve})
