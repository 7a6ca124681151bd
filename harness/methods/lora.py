"""LoRA (and its rsLoRA / DoRA variants) through peft: low-rank adapters on chosen projections."""

from __future__ import annotations

from harness.methods.registry import ArmContext, Method, register

# `target_modules: auto` = the attention projections of the architecture (LoRA paper's choice).
ATTENTION_PROJECTIONS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "gpt2": ["c_attn"],
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
}
# GPT-2 stores Conv1D weights transposed; peft must be told.
FAN_IN_FAN_OUT = {"gpt2"}


def target_modules(spec, model_type: str):
    if spec == "auto":
        if model_type not in ATTENTION_PROJECTIONS:
            raise ValueError(f"no `auto` LoRA targets for model type '{model_type}'; "
                             "set params.target_modules to a list of module names or 'all-linear'")
        return ATTENTION_PROJECTIONS[model_type]
    return spec


def lora_config(params: dict, ctx: ArmContext):
    from peft import LoraConfig, TaskType

    by_task = {"token_classification": TaskType.TOKEN_CLS, "extractive_qa": TaskType.QUESTION_ANS}
    task_type = TaskType.CAUSAL_LM if ctx.kind == "causal_lm" else by_task.get(ctx.task_type, TaskType.SEQ_CLS)
    return LoraConfig(
        task_type=task_type,
        r=int(params["r"]),
        lora_alpha=params["alpha"],
        lora_dropout=params["dropout"],
        target_modules=target_modules(params["target_modules"], ctx.model_type),
        use_rslora=bool(params["use_rslora"]),
        use_dora=bool(params["use_dora"]),
        bias=params["bias"],
        fan_in_fan_out=ctx.model_type in FAN_IN_FAN_OUT,
    )


@register("lora")
class LoRA(Method):
    description = "low-rank adapters (peft); rsLoRA and DoRA as params; the encoder head trains too"
    defaults = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "auto",
                "use_rslora": False, "use_dora": False, "bias": "none", "lr": 2e-4}

    def wrap(self, model, params, ctx):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(params, ctx))
