"""P-tuning (Liu et al.): virtual-token embeddings produced by a small trainable prompt encoder
(an MLP or LSTM) and prepended to the input; the model stays frozen."""

from __future__ import annotations

from harness.methods.registry import Method, register


@register("p_tuning")
class PTuning(Method):
    description = "virtual tokens from a trainable prompt encoder, MLP or LSTM (peft PromptEncoder)"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "sft"}
    defaults = {"num_virtual_tokens": 16, "encoder_hidden_size": 128, "encoder": "MLP", "lr": 1e-2}

    def wrap(self, model, params, ctx):
        from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, TaskType, get_peft_model

        config = PromptEncoderConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=int(params["num_virtual_tokens"]),
            encoder_hidden_size=int(params["encoder_hidden_size"]),
            encoder_reparameterization_type=PromptEncoderReparameterizationType(params["encoder"]))
        return get_peft_model(model, config)
