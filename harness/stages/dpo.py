"""DPO (TRL's DPOTrainer) from the model as the earlier stages left it.

The reference is that model, frozen. How, verified in trl 1.16's dpo_trainer.py: given a
PeftModel and no peft_config/ref_model, DPOTrainer.__init__ adds an adapter "ref" and copies
the "default" adapter's weights into it; reference log-probs run under use_adapter(model,
"ref"). So the reference is the post-SFT adapter, not the adapter-disabled base (which is what
it would be with precompute on a fresh peft_config). A model without peft gets an explicit
frozen deep copy as ref_model: with ref_model=None TRL would reload the base from disk.
tests/test_alignment.py checks that the reference log-probs equal the post-SFT model's.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from harness.errors import did_you_mean
from harness.stages import trl_common as common
from harness.stages.registry import Stage, StageContext, StageOutcome, StageParams, register_stage

# DPOConfig.loss_type's values in trl 1.16 (its docstring); checked at `harness validate`.
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


@register_stage("dpo")
class DPO(Stage):
    description = "direct preference optimisation against the frozen model before this stage (TRL)"

    class Params(StageParams):
        loss_type: str = Field("sigmoid", description="DPOConfig.loss_type: " + ", ".join(LOSS_TYPES))

        @field_validator("loss_type")
        @classmethod
        def _known(cls, value: str) -> str:
            if value not in LOSS_TYPES:
                raise ValueError(f"unknown DPO loss_type '{value}'; {did_you_mean(value, LOSS_TYPES)}")
            return value

    def trainer(self, ctx: StageContext, params: Params, items: list[dict], callbacks=()):
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        args = common.trl_args(
            DPOConfig,
            ctx,
            params.lr,
            beta=params.beta,
            loss_type=[params.loss_type],
            max_length=ctx.budget.max_seq_len,
            train_sampling_strategy="sequential",
            precompute_ref_log_probs=False,
        )
        data = Dataset.from_list([{k: i[k] for k in ("prompt", "chosen", "rejected")} for i in items])
        ref = None if common.is_peft(ctx.model) else common.frozen_copy(ctx.model)
        return DPOTrainer(
            model=ctx.model,
            ref_model=ref,
            args=args,
            train_dataset=data,
            processing_class=ctx.tokenizer,
            callbacks=list(callbacks),
        )

    def train(self, ctx: StageContext, params: Params) -> StageOutcome:
        items = ctx.pairs(ctx.steps * ctx.budget.batch_size)
        progress = common.Progress("dpo", ctx.on_step, {"loss": "dpo_loss", "rewards/margins": "dpo_train_margin"})
        trainer = self.trainer(ctx, params, items, [progress])
        try:
            consumed = common.run_trainer(trainer, items, common.completion_tokens(ctx.tokenizer, items), ctx.steps)
        finally:
            common.drop_ref_adapter(ctx.model)
        return StageOutcome(consumed, progress.curves)
