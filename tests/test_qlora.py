"""QLoRA on CPU: gradients after an eval-mode pass must match a dequantized fp32 reference
(STACK_NOTES: on AVX512-BF16 CPUs an eval forward repacks 4-bit weights and later gradients go
silently wrong unless harness turns that path off)."""

from __future__ import annotations

import pytest
import torch

from harness import models
from harness.methods import ArmContext, get_method

pytest.importorskip("bitsandbytes")

PARAMS = get_method("qlora").Params(r=4, dropout=0.0)


def ctx(device="cpu"):
    return ArmContext(kind="causal_lm", task_type="generation", model_type="llama", device=device, seed=0)


def quantized_lora(model_dir):
    method = get_method("qlora")
    base = models.load_model(model_dir, "causal_lm", extra_kwargs=method.load_kwargs(PARAMS, ctx()))
    return method.wrap(base, PARAMS, ctx())


def dequantized_reference(model_dir, qmodel):
    """The fp32 model whose Linear weights are exactly the dequantized 4-bit ones, same LoRA."""
    import bitsandbytes as bnb
    from peft import get_peft_model

    from harness.methods.lora import lora_config

    ref = models.load_model(model_dir, "causal_lm")
    ref_modules = dict(ref.named_modules())
    for name, module in qmodel.base_model.model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            ref_modules[name.replace(".base_layer", "")].weight.data.copy_(weight.float())
    ref = get_peft_model(ref, lora_config(PARAMS, ctx()))
    ref.load_state_dict({k: v for k, v in qmodel.state_dict().items() if "lora_" in k}, strict=False)
    return ref


def lora_grads(model, ids):
    model.train()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_qlora_gradients_after_an_eval_pass_match_a_dequantized_reference(tiny_models):
    torch.manual_seed(0)
    qmodel = quantized_lora(tiny_models["llama"])
    assert any(type(p).__name__ == "Params4bit" for p in qmodel.parameters()), "the base is 4-bit"
    with torch.no_grad():  # B starts at zero (A would get no gradient): give both a value
        for name, p in qmodel.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    ids = torch.randint(4, 300, (2, 12))
    qmodel.eval()
    with torch.no_grad():
        qmodel(input_ids=ids)  # the eval-mode forward that repacks weights on AVX512-BF16 CPUs
    ref = dequantized_reference(tiny_models["llama"], qmodel)
    got, want = lora_grads(qmodel, ids), lora_grads(ref, ids)
    assert set(got) == set(want) and len(got) == 2 * 4 * 2  # A and B on q, k, v, o of 2 layers
    for name in want:
        rel = (got[name] - want[name]).norm() / want[name].norm()
        assert rel < 1e-3, f"{name}: relative gradient error {rel:.3g}"


def test_an_eval_pass_before_wrapping_leaves_gradients_right(tiny_models):
    """execute.py measures forgetting (an eval forward) between loading and wrapping: the repack
    must already be off then, so the fix belongs to loading, not to QLoRA's wrap."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    method = get_method("qlora")
    base = models.load_model(tiny_models["llama"], "causal_lm", extra_kwargs=method.load_kwargs(PARAMS, ctx()))
    layers = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    ids = torch.randint(4, 300, (2, 12))
    base.eval()
    with torch.no_grad():
        base(input_ids=ids)  # before wrap, as the forgetting measurement does
    qmodel = method.wrap(base, PARAMS, ctx())
    with torch.no_grad():
        for name, p in qmodel.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    ref = dequantized_reference(tiny_models["llama"], qmodel)
    got, want = lora_grads(qmodel, ids), lora_grads(ref, ids)
    for name in want:
        rel = (got[name] - want[name]).norm() / want[name].norm()
        assert rel < 1e-3, f"{name}: relative gradient error {rel:.3g}"


def test_qlora_loads_on_cuda_in_bf16_compute_and_on_cpu_in_fp32():
    cpu = get_method("qlora").load_kwargs(PARAMS, ctx("cpu"))
    cuda = get_method("qlora").load_kwargs(PARAMS, ctx("cuda"))
    assert cpu["device_map"] == "cpu" and cpu["quantization_config"].bnb_4bit_compute_dtype == torch.float32
    assert cuda["device_map"] == {"": 0} and cuda["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    for kwargs in (cpu, cuda):
        q = kwargs["quantization_config"]
        assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
