"""Loading a resolved folder the one way every arm does: tokenizer (pad token), dtype, the model
class for its kind and head, and the CPU QLoRA guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError, did_you_mean
from harness.models.packaged import ModelKind


def load_tokenizer(path: Path, *, trust_remote_code: bool = False):
    """AutoTokenizer for a resolved folder; a tokenizer without a pad token pads with eos.

    padding_side is left as saved: generation wants left padding, training right; callers set it.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def resolve_dtype(dtype: str):
    """'auto' -> float32 on CPU, bfloat16 on a CUDA device that supports it (else float16)."""
    import torch

    if dtype == "auto":
        if not torch.cuda.is_available():
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise HarnessError(f"unknown dtype '{dtype}'", key="dtype", fix=did_you_mean(dtype, [*_DTYPES, "auto"]))
    return getattr(torch, _DTYPES[dtype])


def _model_class(kind: ModelKind, head: bool):
    """(kind, new classification head?) -> Auto class. A decoder with labels gets a score head too."""
    import transformers

    table = {
        ("causal_lm", False): "AutoModelForCausalLM",
        ("encoder", False): "AutoModel",
        ("causal_lm", True): "AutoModelForSequenceClassification",
        ("encoder", True): "AutoModelForSequenceClassification",
    }
    if (kind, head) not in table:
        raise HarnessError(f"unknown model kind '{kind}'", key="kind", fix=did_you_mean(kind, ["causal_lm", "encoder"]))
    return getattr(transformers, table[kind, head])


def load_model(
    path: Path,
    kind: ModelKind,
    *,
    num_labels: int | None = None,
    id2label: dict | None = None,
    dtype: str = "auto",
    extra_kwargs: dict | None = None,
    trust_remote_code: bool = False,
    tokenizer=None,
    head_class: str | None = None,
    weights: bool = True,
):
    """Load a resolved folder: safetensors only, on CUDA when there is one.

    - causal_lm -> AutoModelForCausalLM; encoder -> AutoModel (bare encoder).
    - num_labels (or id2label) -> AutoModelForSequenceClassification with a new head and the label
      maps set, for either kind.
    - head_class (a transformers Auto class name, e.g. AutoModelForTokenClassification) overrides
      that choice: the encoder head a task type needs (harness.tasks).
    - extra_kwargs go to from_pretrained last, so methods can add quantization_config or device_map
      (or override dtype). A model with a device_map or a quantization_config is not moved.
    - tokenizer (optional): fills config.pad_token_id (and the generation config's) when missing,
      which batched sequence classification and padded generation need.
    - weights=False: the same model on the meta device, nothing read or allocated: a rank of a
      sharded arm, which receives its shards from rank 0 (harness.training.fsdp).
    """
    import torch

    if id2label is not None:
        id2label = {int(i): str(label) for i, label in id2label.items()}
        num_labels = num_labels or len(id2label)
    head = num_labels is not None
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(dtype),
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
    }
    if head:
        # ignore_mismatched_sizes: a checkpoint that already has a head of another size gets a new one
        kwargs |= {"num_labels": num_labels, "ignore_mismatched_sizes": True}
        if id2label is not None:
            kwargs |= {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    kwargs |= extra_kwargs or {}
    try:
        import transformers

        cls = getattr(transformers, head_class) if head_class else _model_class(kind, head)
        model = cls.from_pretrained(str(path), **kwargs) if weights else _architecture_only(cls, path, kwargs)
    except OSError as exc:  # typically: no safetensors weights, or a missing file
        raise HarnessError(
            f"cannot load a model from {path} ({str(exc).splitlines()[0][:200]})",
            fix="the folder needs config.json and *.safetensors weights (harness loads safetensors only)",
        ) from exc

    if "quantization_config" in kwargs:
        # Right after loading, before anything (forgetting, golden sets) runs an eval forward.
        disable_avx512_bf16_repack(model)
    if tokenizer is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    if torch.cuda.is_available() and weights and "device_map" not in kwargs and "quantization_config" not in kwargs:
        model = model.to("cuda")
    return model


def _architecture_only(cls, path: Path, kwargs: dict):
    """What from_pretrained(path, **kwargs) would build, on the meta device and without its weights."""
    import torch
    from transformers import AutoConfig

    if "quantization_config" in kwargs or "device_map" in kwargs:
        raise HarnessError(
            "a quantized or device-mapped model cannot be built without its weights",
            key="strategy",
            fix="train this method with `strategy: ddp`",
        )
    labels = {k: v for k, v in kwargs.items() if k in ("num_labels", "id2label", "label2id")}
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=kwargs["trust_remote_code"], **labels)
    with torch.device("meta"):
        return cls.from_config(config, dtype=kwargs["dtype"], trust_remote_code=kwargs["trust_remote_code"])


def disable_avx512_bf16_repack(model) -> int:
    """STACK_NOTES trap: on CPUs with AVX512-BF16 ANY eval-mode forward repacks 4-bit weights, and
    later training goes through a kernel without autograd (silently wrong gradients). Turning the
    fast path off on every Linear4bit, as soon as the model is loaded, keeps gradients right.
    Returns how many layers were set."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
