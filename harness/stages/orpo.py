"""ORPO (trl.experimental.orpo): SFT loss plus an odds-ratio preference term; no reference model."""

from __future__ import annotations

from harness.stages import trl_common as common
from harness.stages.registry import Stage, StageContext, StageOutcome, StageParams, register_stage


@register_stage("orpo")
class ORPO(Stage):
    description = "odds-ratio preference optimisation, no reference model (TRL experimental)"
    Params = StageParams

    def train(self, ctx: StageContext, params: StageParams) -> StageOutcome:
        from datasets import Dataset
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        items = ctx.pairs(ctx.steps * ctx.budget.batch_size)
        progress = common.Progress("orpo", ctx.on_step, {"loss": "orpo_loss", "rewards/margins": "orpo_train_margin"})
        args = common.trl_args(
            ORPOConfig,
            ctx,
            params.lr,
            beta=params.beta,
            max_length=ctx.budget.max_seq_len,
            train_sampling_strategy="sequential",
        )
        data = Dataset.from_list([{k: i[k] for k in ("prompt", "chosen", "rejected")} for i in items])
        trainer = ORPOTrainer(
            model=ctx.model, args=args, train_dataset=data, processing_class=ctx.tokenizer, callbacks=[progress]
        )
        consumed = common.run_trainer(trainer, items, common.completion_tokens(ctx.tokenizer, items), ctx.steps)
        return StageOutcome(consumed, progress.curves)
