"""Partial fine-tuning: freeze the model, train only its top N transformer layers and/or its
head (the classifier on an encoder, the LM head on a decoder)."""

from __future__ import annotations

import torch
from pydantic import Field

from harness.methods.registry import Method, TrainedParams, register

HEAD_NAMES = ("classifier", "score", "lm_head")  # what transformers calls the output head
FINAL_NORMS = ("norm", "final_layer_norm", "ln_f")  # decoders normalise after the last layer


def layer_stack(model) -> torch.nn.ModuleList:
    """The longest ModuleList of the model: its transformer layers."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ValueError("partial_ft found no stack of layers (torch.nn.ModuleList) in this model")
    return max(lists, key=len)


def top_modules(model, top_layers: int, train_head: bool) -> list[torch.nn.Module]:
    layers = layer_stack(model)
    if not 0 <= top_layers <= len(layers):
        raise ValueError(f"top_layers must be between 0 and {len(layers)} (the model's layers), not {top_layers}")
    picked = list(layers)[len(layers) - top_layers :] if top_layers else []
    if top_layers:
        picked += [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in FINAL_NORMS]
    if train_head:
        picked += [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in HEAD_NAMES]
    return picked


@register("partial_ft")
class PartialFineTuning(Method):
    description = "train only the top N layers and/or the head; everything below stays frozen"

    class Params(TrainedParams):
        lr: float = Field(5e-5, gt=0, description="learning rate (AdamW)")
        top_layers: int = Field(2, ge=0, description="transformer layers that train, counted from the top")
        train_head: bool = Field(True, description="the head (LM head or classifier) trains too")

    def wrap(self, model, params, ctx):
        for p in model.parameters():
            p.requires_grad_(False)
        # A decoder whose LM head is tied to the input embeddings trains the embeddings with it.
        for module in top_modules(model, params.top_layers, params.train_head):
            for p in module.parameters():
                p.requires_grad_(True)
        return model
