"""Prompt tuning (Lester et al.): a few trainable virtual-token embeddings prepended to the
input; the model itself stays frozen. Initialised from a text's embeddings or at random."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from harness.methods.registry import Method, TrainedParams, register


@register("prompt_tuning")
class PromptTuning(Method):
    description = "trainable soft-prompt embeddings before the input (peft); init from text or random"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "sft"}

    class Params(TrainedParams):
        lr: float = Field(3e-2, gt=0, description="learning rate (AdamW)")
        num_virtual_tokens: int = Field(16, gt=0, description="soft-prompt length")
        init: Literal["text", "random"] = Field(
            "text", description="initialise from init_text's embeddings or at random"
        )
        init_text: str = Field(
            "Read the task and answer it correctly:", description="text whose embeddings start the prompt"
        )

    def wrap(self, model, params, ctx):
        from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

        # A weightless (meta) model in `harness plan` cannot embed the text: same count either way.
        from_text = params.init == "text" and ctx.device != "meta"
        config = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=params.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT if from_text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=params.init_text if from_text else None,
            # peft tokenizes the init text itself: point it at the arm's tokenizer folder
            tokenizer_name_or_path=ctx.model_dir if from_text else None,
        )
        return get_peft_model(model, config)
