"""QLoRA (Dettmers et al.): the frozen base loaded in 4-bit NF4 with double quantization
(bitsandbytes), prepared for k-bit training, then LoRA adapters in higher precision.
bitsandbytes runs NF4 on CPU too, so this trains for real without a GPU. The compute dtype follows
budget.precision (bf16 on a CUDA device that supports it by default, fp32 on CPU)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from harness.methods.lora import LoRA, LoRAParams, lora_config
from harness.methods.registry import register
from harness.models import disable_avx512_bf16_repack
from harness.training.mixed_precision import compute_dtype, resolve_precision


@register("qlora")
class QLoRA(LoRA):
    description = "LoRA on a 4-bit NF4 double-quantized frozen base (bitsandbytes); compute dtype = budget.precision"

    class Params(LoRAParams):
        quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base")
        double_quant: bool = Field(True, description="quantize the quantization constants too")

    def load_kwargs(self, params, ctx):
        from transformers import BitsAndBytesConfig

        cuda = ctx.device == "cuda"
        # The 4-bit base dequantizes to the training precision for each matmul.
        compute = compute_dtype(resolve_precision(ctx.precision, cuda=cuda))
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=params.quant_type,
            bnb_4bit_use_double_quant=params.double_quant,
            bnb_4bit_compute_dtype=compute,
        )
        # Under DDP each rank's copy goes to that rank's own device (torchrun's LOCAL_RANK; 0 alone).
        device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))} if cuda else "cpu"
        return {"quantization_config": config, "device_map": device_map, "dtype": compute}

    def wrap(self, model, params, ctx):
        from peft import get_peft_model, prepare_model_for_kbit_training

        if ctx.device != "meta":  # `harness plan` counts on an unquantized weightless model
            disable_avx512_bf16_repack(model)  # also done at load; kept for models loaded elsewhere
            # Gradient checkpointing would trade compute for memory; keep the shared loop's cost
            # comparable to LoRA's and leave it off.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, lora_config(params, ctx))
