"""P-tuning (Liu et al.): virtual-token embeddings produced by a small trainable prompt encoder
(an MLP or LSTM) and prepended to the input; the model stays frozen."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from harness.methods.registry import Method, TrainedParams, register


@register("p_tuning")
class PTuning(Method):
    description = "virtual tokens from a trainable prompt encoder, MLP or LSTM (peft PromptEncoder)"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "sft"}

    class Params(TrainedParams):
        lr: float = Field(1e-2, gt=0, description="learning rate (AdamW)")
        num_virtual_tokens: int = Field(16, gt=0, description="virtual tokens before the input")
        encoder_hidden_size: int = Field(128, gt=0, description="hidden size of the prompt encoder")
        encoder: Literal["MLP", "LSTM"] = Field("MLP", description="prompt encoder reparameterisation")

    def wrap(self, model, params, ctx):
        from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, TaskType, get_peft_model

        config = PromptEncoderConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=params.num_virtual_tokens,
            encoder_hidden_size=params.encoder_hidden_size,
            encoder_reparameterization_type=PromptEncoderReparameterizationType(params.encoder),
        )
        return get_peft_model(model, config)
