"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): a down-projection, a
nonlinearity and an up-projection with a residual, after each layer's feed-forward block
(Pfeiffer) and also after its attention output (Houlsby). The base stays frozen.

peft has no such tuner and AdapterHub's `adapters` pins transformers 4.x, so this is a small
module: adapters live in `model.bottleneck_adapters` and run as forward hooks on the chosen
modules; only they (and an encoder's head) are saved, as safetensors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import Field
from torch import nn

from harness.methods.registry import Method, TrainedParams, register

# Module-name patterns per placement: the FFN block's output, and the attention output projection.
FFN = {
    "llama": r"layers\.\d+\.mlp",
    "mistral": r"layers\.\d+\.mlp",
    "qwen2": r"layers\.\d+\.mlp",
    "bert": r"layer\.\d+\.output\.dense",
    "roberta": r"layer\.\d+\.output\.dense",
}
ATTENTION = {
    "llama": r"layers\.\d+\.self_attn\.o_proj",
    "mistral": r"layers\.\d+\.self_attn\.o_proj",
    "qwen2": r"layers\.\d+\.self_attn\.o_proj",
    "bert": r"layer\.\d+\.attention\.output\.dense",
    "roberta": r"layer\.\d+\.attention\.output\.dense",
}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
HEADS = ("classifier", "score")
WEIGHTS, CONFIG = "bottleneck.safetensors", "bottleneck.json"


class Bottleneck(nn.Module):
    """h + up(act(down(h))); up starts at zero, so the wrapped model starts unchanged."""

    def __init__(self, dim: int, reduction_factor: int, activation: str):
        super().__init__()
        self.down = nn.Linear(dim, max(1, dim // reduction_factor))
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(self.down.out_features, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(self.act(self.down(h.to(self.up.weight.dtype)))).to(h.dtype)


def target_names(model, model_type: str, placement: str) -> list[str]:
    if model_type not in FFN:
        raise ValueError(
            f"bottleneck adapters know no module names for model type '{model_type}' (known: {', '.join(sorted(FFN))})"
        )
    if placement not in ("pfeiffer", "houlsby"):
        raise ValueError(f"bottleneck placement must be 'pfeiffer' or 'houlsby', not {placement!r}")
    patterns = [FFN[model_type]] + ([ATTENTION[model_type]] if placement == "houlsby" else [])
    found = [n for n, _ in model.named_modules() if any(re.search(p + "$", n) for p in patterns)]
    if not found:
        raise ValueError(f"bottleneck adapters found no module matching {patterns} in this model")
    return found


def add_adapters(model, config: dict) -> list[str]:
    """Freeze the base, add one adapter per target module and hook it in; returns the targets."""
    names = target_names(model, config["model_type"], config["placement"])
    weight = next(model.parameters())
    adapters = nn.ModuleDict()
    for name in names:
        adapters[name.replace(".", "__")] = Bottleneck(
            model.config.hidden_size, config["reduction_factor"], config["activation"]
        ).to(weight.device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.bottleneck_adapters = adapters
    modules = dict(model.named_modules())
    for name in names:
        adapter = adapters[name.replace(".", "__")]
        modules[name].register_forward_hook(lambda _m, _inp, out, a=adapter: a(out))
    for name, module in modules.items():  # an encoder's new classification head trains too
        if config["train_head"] and name.rsplit(".", 1)[-1] in HEADS:
            module.requires_grad_(True)
    return names


def save_adapters(model, path: Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, path / WEIGHTS)
    (path / CONFIG).write_text(json.dumps(model.bottleneck_config, indent=2))


def load_adapters(model, path: Path):
    """Add the saved adapters to a freshly loaded base model and load their (and the head's) weights."""
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / CONFIG).read_text())
    add_adapters(model, config)
    model.bottleneck_config = config
    result = model.load_state_dict(load_file(path / WEIGHTS), strict=False)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if k.startswith("bottleneck_adapters.")]
    if unexpected or missing:
        raise ValueError(f"{path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


@register("bottleneck")
class BottleneckAdapters(Method):
    description = "bottleneck adapters after the feed-forward (pfeiffer) and attention (houlsby) blocks"

    class Params(TrainedParams):
        lr: float = Field(1e-3, gt=0, description="learning rate (AdamW)")
        placement: Literal["pfeiffer", "houlsby"] = Field(
            "pfeiffer", description="pfeiffer: after the feed-forward block; houlsby: after attention too"
        )
        reduction_factor: int = Field(16, gt=0, description="hidden size / bottleneck size")
        activation: Literal["relu", "gelu", "silu", "tanh"] = Field("relu", description="bottleneck non-linearity")

    def wrap(self, model, params, ctx):
        config = {
            "model_type": ctx.model_type,
            "placement": params.placement,
            "reduction_factor": params.reduction_factor,
            "activation": params.activation,
            "train_head": ctx.kind == "encoder",
        }
        add_adapters(model, config)
        model.bottleneck_config = config
        return model

    def save(self, model, path) -> bool:
        save_adapters(model, path)
        return True
