"""IA3 (Liu et al.): learned vectors that rescale keys, values and the feed-forward activations;
a handful of parameters, mergeable into the base weights. On an encoder the head trains too."""

from __future__ import annotations

from harness.methods.registry import Method, register

# peft knows defaults for many architectures; these cover the ones whose names differ.
TARGETS = {
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mistral": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "qwen2": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
}


@register("ia3")
class IA3(Method):
    description = "learned rescaling of keys, values and feed-forward activations (peft IA3)"
    defaults = {"target_modules": "auto", "feedforward_modules": "auto", "lr": 3e-3}

    def wrap(self, model, params, ctx):
        from peft import IA3Config, TaskType, get_peft_model

        targets, feedforward = TARGETS.get(ctx.model_type, (None, None))  # None: peft's own table
        if params["target_modules"] != "auto":
            targets, feedforward = params["target_modules"], params["feedforward_modules"]
        config = IA3Config(task_type=TaskType.CAUSAL_LM if ctx.kind == "causal_lm" else TaskType.SEQ_CLS,
                           target_modules=targets, feedforward_modules=feedforward)
        return get_peft_model(model, config)
