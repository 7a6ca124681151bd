"""GRPO (TRL's GRPOTrainer): sample a group of completions per prompt, score them with reward
plugins (harness.rewards), push towards the better ones with a KL penalty to the model before
this stage. For peft arms TRL copies the current adapter into a frozen "ref" adapter when
kl_coef > 0 (trl 1.16 grpo_trainer.py); a non-peft arm's reference is set to a frozen deep copy
(TRL would otherwise reload the base from disk). Generation knobs come from budget.alignment so
they are identical across arms; group size and KL coefficient are the stage's params."""

from __future__ import annotations

from pydantic import Field, field_validator

from harness.plugins import Params
from harness.stages import trl_common as common
from harness.stages.registry import Stage, StageContext, StageOutcome, register_stage
from harness.stages.rewards import rewards_list


@register_stage("grpo")
class GRPO(Stage):
    description = "group relative policy optimisation with reward plugins (TRL)"

    class Params(Params):
        lr: float = Field(5e-5, gt=0, description="learning rate of this stage")
        group_size: int = Field(4, ge=2, description="completions sampled per prompt (the group)")
        kl_coef: float = Field(0.04, ge=0, description="KL penalty to the model before this stage (0: none)")
        rewards: list[str | dict] = Field(
            ["label_correct", "format"],
            min_length=1,
            description="reward plugins summed per completion: names or {name: {params}} (harness stages lists them)",
        )

        @field_validator("rewards", mode="before")
        @classmethod
        def _rewards(cls, value):
            return rewards_list(value)

    def train(self, ctx: StageContext, params: Params) -> StageOutcome:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        from harness.stages.rewards import as_trl

        knobs = ctx.budget.alignment
        group, per_step = params.group_size, knobs.prompts_per_step
        items = ctx.pairs(ctx.steps * per_step)
        rewards = [as_trl(entry, ctx) for entry in params.rewards]
        keys = {"loss": "grpo_loss", "reward": "grpo_reward", "kl": "grpo_kl", "completions/mean_length": "grpo_len"}
        progress = common.Progress("grpo", ctx.on_step, keys)
        args = common.trl_args(
            GRPOConfig,
            ctx,
            params.lr,
            per_device=group * per_step,
            accum=1,
            num_generations=group,
            beta=params.kl_coef,
            max_completion_length=knobs.max_completion_len,
            temperature=knobs.temperature,
            shuffle_dataset=False,
            log_completions=False,
        )
        data = Dataset.from_list([{"prompt": i["prompt"], "target": i["target"], "labels": i["labels"]} for i in items])
        ref = None if common.is_peft(ctx.model) or not params.kl_coef else common.frozen_copy(ctx.model)
        trainer = GRPOTrainer(
            model=ctx.model,
            reward_funcs=rewards,
            args=args,
            train_dataset=data,
            processing_class=ctx.tokenizer,
            callbacks=[progress],
        )
        if ref is not None:  # in place of the base TRL loaded from disk, prepared the way TRL prepares its own
            from trl.trainer.utils import add_fused_lm_head, disable_dropout_in_model

            add_fused_lm_head(ref, temperature=args.temperature, cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
            disable_dropout_in_model(ref)
            trainer.ref_model = ref
        try:
            consumed = common.run_trainer(trainer, items, 0, ctx.steps)
        finally:
            common.drop_ref_adapter(ctx.model)
        consumed.examples = len(items) * group  # completions sampled and trained on
        consumed.tokens = sum(int(n * group * per_step) for _, n in progress.curves.get("grpo_len", []))
        rewards_seen = [v for _, v in progress.curves["grpo_reward"]]
        mean = round(sum(rewards_seen) / len(rewards_seen), 6) if rewards_seen else None
        return StageOutcome(consumed, progress.curves, {"grpo_mean_reward": mean})
