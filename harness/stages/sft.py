"""The sft stage: the arm's method objective (the shared hand-written loop) for the stage's steps."""

from __future__ import annotations

from harness.stages.registry import Stage, StageContext, StageOutcome, register_stage


@register_stage("sft")
class SFT(Stage):
    description = "supervised fine-tuning with the shared loop (the method's objective); lr: the arm's lr"
    applies_to = frozenset({"causal_lm", "encoder"})
    preference = False
    defaults = {"lr": None}   # None: the arm's (method's) learning rate

    def train(self, ctx: StageContext, params: dict) -> StageOutcome:
        from harness.objectives import get_objective

        objective = get_objective(ctx.method.objective_for(ctx.kind))
        lr = float(params["lr"] if params.get("lr") is not None else ctx.method_lr)
        consumed, curve = objective.train(ctx.model, ctx.tokenizer, ctx.train, ctx.task, ctx.budget, lr,
                                          on_step=ctx.on_step)
        return StageOutcome(consumed, {"train_loss": curve})
