"""Training precision (`budget.precision`): mixed precision, never pure low precision.

Trainable weights and the optimizer state stay fp32 (the master weights); only the forward pass
runs under autocast in bf16 or fp16. Pure bf16 training rounds away every update smaller than
the weight's bf16 spacing (2**-8 relative), which is how small learning rates silently stop
working. The dtype of a FROZEN base is a different knob (`models.<key>.dtype`): a LoRA or QLoRA
arm may keep its frozen base in bf16 to save memory while its adapters train in fp32.
"""

from __future__ import annotations

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_ACCELERATE_NAME = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def resolve_precision(precision: str | None, *, cuda: bool | None = None) -> str:
    """'auto' -> bf16 on a CUDA device that supports it, fp16 on an older CUDA device, fp32 on CPU."""
    import torch

    precision = precision or "auto"
    if precision != "auto":
        return precision
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "fp32"
    if not torch.cuda.is_available():  # planning for a CUDA machine from one without
        return "bf16"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def accelerate_mixed_precision(precision: str) -> str:
    """A resolved precision as Accelerator(mixed_precision=...) spells it."""
    return _ACCELERATE_NAME[precision]


def compute_dtype(precision: str):
    """The torch dtype the forward pass computes in (QLoRA's bnb_4bit_compute_dtype follows it)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def upcast_trainable(model) -> int:
    """Trainable parameters to fp32 (the master weights); the frozen ones keep their dtype.
    Returns how many tensors were cast (0 for a model loaded in fp32)."""
    import torch

    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast
