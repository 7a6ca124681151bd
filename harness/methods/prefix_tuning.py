"""Prefix tuning (Li & Liang): trainable key/value prefixes in every attention layer; the model
stays frozen. peft reparameterises the prefixes through an MLP while training."""

from __future__ import annotations

from harness.methods.registry import Method, register


@register("prefix_tuning")
class PrefixTuning(Method):
    description = "trainable key/value prefixes in every attention layer (peft PrefixTuning)"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "sft"}
    defaults = {"num_virtual_tokens": 16, "prefix_projection": False, "encoder_hidden_size": 256,
                "lr": 1e-2}

    def wrap(self, model, params, ctx):
        from peft import PrefixTuningConfig, TaskType, get_peft_model

        config = PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=int(params["num_virtual_tokens"]),
            prefix_projection=bool(params["prefix_projection"]),
            encoder_hidden_size=int(params["encoder_hidden_size"]))
        return get_peft_model(model, config)
