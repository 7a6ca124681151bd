"""Method registry: `@register("name")` for built-ins, the `harness.methods` entry-point group
for third-party packages. Unknown names fail with "did you mean"."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from harness.plugins import Params, Plugin, Registry

# Built-in method modules, imported lazily so `harness methods` and `validate` stay fast.
BUILTIN_MODULES = [
    "harness.methods.prompting",
    "harness.methods.lora",
    "harness.methods.full_ft",
    "harness.methods.partial_ft",
    "harness.methods.prompt_tuning",
    "harness.methods.prefix_tuning",
    "harness.methods.p_tuning",
    "harness.methods.qlora",
    "harness.methods.ia3",
    "harness.methods.bottleneck",
    "harness.methods.multi_task",
]


class ArmContext:
    """What a method may know about the arm it wraps: plain facts, no behaviour."""

    def __init__(
        self,
        *,
        kind: str,
        task_type: str,
        model_type: str,
        device: str,
        seed: int,
        num_labels: int | None = None,
        model_dir: str | None = None,
        tasks: dict | None = None,
        precision: str = "auto",
    ):
        self.kind, self.task_type, self.model_type = kind, task_type, model_type
        self.precision = precision  # budget.precision: the compute dtype of training (QLoRA's too)
        self.device, self.seed, self.num_labels = device, seed, num_labels
        # device "meta": `harness plan` wraps a weightless model to count parameters; a method
        # must then skip anything that reads weights or files (it may still build adapters).
        self.model_dir = model_dir
        # methods that span tasks (multi_task): {task key: {"type": ..., "num_labels": ...}}
        self.tasks = tasks or {}


class TrainedParams(Params):
    """Params of every method that trains: its learning rate."""

    lr: float = Field(2e-4, gt=0, description="learning rate (AdamW)")


class Method(Plugin):
    """The plugin contract. A method wraps a model; it never owns a training loop.

    `objective` names the shared loop that trains it per model kind ("none" = no training);
    `Params` declares every hyperparameter it accepts (`lr` included, via TrainedParams), so
    unknown keys, wrong types and out-of-range values are errors at `harness validate`. Every
    hook below receives the arm's validated `Params` instance and reads attributes (`params.r`).
    """

    applies_to: ClassVar[frozenset[str]] = frozenset({"causal_lm", "encoder"})
    objective: ClassVar[dict[str, str]] = {"causal_lm": "sft", "encoder": "classification"}

    def objective_for(self, kind: str) -> str:
        return self.objective[kind]

    def load_kwargs(self, params: Params, ctx: ArmContext) -> dict:
        """Extra from_pretrained kwargs (for example a quantization config)."""
        return {}

    def wrap(self, model, params: Params, ctx: ArmContext):
        """Return the model to train/evaluate (freeze, add adapters, ...)."""
        return model

    def save(self, model, path) -> bool:
        """Save what was trained (an adapter) to the folder `path`; False when nothing is kept.
        peft models save their adapter; methods with their own modules override this."""
        if not hasattr(model, "peft_config"):
            return False
        model.save_pretrained(path)
        return True

    def shots(self, params: Params, train: list[dict], ctx: ArmContext) -> list[dict]:
        """In-context examples shown before each test input (few-shot prompting)."""
        return []


METHODS = Registry("method", "harness.methods", BUILTIN_MODULES, base=Method)


def register(name: str):
    return METHODS.register(name)


def get_method(name: str) -> Method:
    return METHODS.get(name)()


def method_names() -> list[str]:
    return METHODS.names()
