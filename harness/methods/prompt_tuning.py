"""Prompt tuning (Lester et al.): a few trainable virtual-token embeddings prepended to the
input; the model itself stays frozen. Initialised from a text's embeddings or at random."""

from __future__ import annotations

from harness.methods.registry import Method, register


def virtual_tokens(params: dict) -> int:
    return int(params["num_virtual_tokens"])


@register("prompt_tuning")
class PromptTuning(Method):
    description = "trainable soft-prompt embeddings before the input (peft); init from text or random"
    applies_to = frozenset({"causal_lm"})
    objective = {"causal_lm": "sft"}
    defaults = {"num_virtual_tokens": 16, "init": "text",
                "init_text": "Read the task and answer it correctly:", "lr": 3e-2}

    def wrap(self, model, params, ctx):
        from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

        if params["init"] not in ("text", "random"):
            raise ValueError(f"prompt_tuning init must be 'text' or 'random', not {params['init']!r}")
        # A weightless (meta) model in `harness plan` cannot embed the text: same count either way.
        from_text = params["init"] == "text" and ctx.device != "meta"
        config = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=virtual_tokens(params),
            prompt_tuning_init=PromptTuningInit.TEXT if from_text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=params["init_text"] if from_text else None,
            # peft tokenizes the init text itself: point it at the arm's tokenizer folder
            tokenizer_name_or_path=ctx.model_dir if from_text else None)
        return get_peft_model(model, config)
