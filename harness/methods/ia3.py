"""IA3 (Liu et al.): learned vectors that rescale keys, values and the feed-forward activations;
a handful of parameters, mergeable into the base weights. On an encoder the head trains too."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from harness.methods.registry import Method, TrainedParams, register
from harness.tasks import peft_task_type

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

    class Params(TrainedParams):
        lr: float = Field(3e-3, gt=0, description="learning rate (AdamW)")
        target_modules: Literal["auto"] | list[str] = Field(
            "auto", description="modules rescaled; auto: a table per architecture, else peft's own"
        )
        feedforward_modules: Literal["auto"] | list[str] = Field(
            "auto", description="which of target_modules are feed-forward (rescaled on their input)"
        )

    def wrap(self, model, params, ctx):
        from peft import IA3Config, get_peft_model

        targets, feedforward = TARGETS.get(ctx.model_type, (None, None))  # None: peft's own table
        if params.target_modules != "auto":
            targets, feedforward = params.target_modules, params.feedforward_modules
        config = IA3Config(
            task_type=peft_task_type(ctx.kind, ctx.task_type), target_modules=targets, feedforward_modules=feedforward
        )
        return get_peft_model(model, config)
