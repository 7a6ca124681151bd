"""Prefix tuning (Li & Liang): trainable key/value prefixes in every attention layer; the model
stays frozen. peft reparameterises the prefixes through an MLP while training."""

from __future__ import annotations

from pydantic import Field

from harness.methods.registry import Method, TrainedParams, register


@register("prefix_tuning")
class PrefixTuning(Method):
    description = "trainable key/value prefixes in every attention layer (peft PrefixTuning)"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "sft"}

    class Params(TrainedParams):
        lr: float = Field(1e-2, gt=0, description="learning rate (AdamW)")
        num_virtual_tokens: int = Field(16, gt=0, description="prefix length in every attention layer")
        prefix_projection: bool = Field(False, description="reparameterise the prefixes through an MLP")
        encoder_hidden_size: int = Field(256, gt=0, description="hidden size of that MLP")

    def wrap(self, model, params, ctx):
        from peft import PrefixTuningConfig, TaskType, get_peft_model

        config = PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=params.num_virtual_tokens,
            prefix_projection=params.prefix_projection,
            encoder_hidden_size=params.encoder_hidden_size,
        )
        return get_peft_model(model, config)
