"""LoRA (and its rsLoRA / DoRA variants) through peft: low-rank adapters on chosen projections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from harness.methods.registry import ArmContext, Method, TrainedParams, register
from harness.tasks import peft_task_type

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
            raise ValueError(
                f"no `auto` LoRA targets for model type '{model_type}'; "
                "set params.target_modules to a list of module names or 'all-linear'"
            )
        return ATTENTION_PROJECTIONS[model_type]
    return spec


class LoRAParams(TrainedParams):
    lr: float = Field(2e-4, gt=0, description="learning rate (AdamW)")
    r: int = Field(16, gt=0, description="rank of the low-rank update")
    alpha: int | float = Field(32, gt=0, description="scaling numerator (scale = alpha / r, or / sqrt(r) with rsLoRA)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: str | list[str] = Field(
        "auto", description="auto: the attention projections; all-linear; or a list of module names"
    )
    use_rslora: bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases train")


def lora_config(params: LoRAParams, ctx: ArmContext):
    from peft import LoraConfig

    return LoraConfig(
        task_type=peft_task_type(ctx.kind, ctx.task_type),
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=target_modules(params.target_modules, ctx.model_type),
        use_rslora=params.use_rslora,
        use_dora=params.use_dora,
        bias=params.bias,
        fan_in_fan_out=ctx.model_type in FAN_IN_FAN_OUT,
    )


@register("lora")
class LoRA(Method):
    description = "low-rank adapters (peft); rsLoRA and DoRA as params; the encoder head trains too"
    Params = LoRAParams

    def wrap(self, model, params, ctx):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(params, ctx))
