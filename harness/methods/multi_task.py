"""Multi-task heads on one encoder: a plan-level arm over several tasks (`spans_tasks`), trained
jointly with interleaved batches (harness.training.multi_task_objective), each task seeing exactly the
examples its single-task arm would. `adapters: per_task` freezes the encoder and gives every task
a LoRA adapter of its own (peft multi-adapter), so tasks cannot interfere."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, ValidationInfo, field_validator

from harness.errors import HarnessError, did_you_mean
from harness.methods.registry import Method, TrainedParams, register
from harness.tasks import TASK_TYPES, task_type


@register("multi_task")
class MultiTask(Method):
    description = (
        "one shared encoder, one head per task, interleaved batches; loss_weights and head_lr per task; "
        "adapters: per_task = a LoRA adapter per task on a frozen encoder"
    )
    applies_to = frozenset({"encoder"})
    objective = {"encoder": "multi_task"}
    spans_tasks = True

    class Params(TrainedParams):
        lr: float = Field(5e-5, gt=0, description="learning rate of the shared encoder (or its adapters)")
        head_lr: PositiveFloat | dict[str, PositiveFloat] = Field(
            1e-3, description="learning rate of the heads: one number, or {task: number} (others: lr)"
        )
        loss_weights: dict[str, NonNegativeFloat] = Field(
            default_factory=dict, description="{task: weight} of each task's loss (others: 1)"
        )
        adapters: Literal["none", "per_task"] = Field(
            "none", description="per_task: a LoRA adapter per task on a frozen encoder"
        )
        r: int = Field(8, gt=0, description="LoRA rank (adapters: per_task)")
        alpha: int | float = Field(16, gt=0, description="LoRA alpha (adapters: per_task)")
        dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (adapters: per_task)")
        target_modules: str | list[str] = Field("auto", description="LoRA targets (adapters: per_task)")

        @field_validator("head_lr", "loss_weights")
        @classmethod
        def _tasks_of_the_arm(cls, value, info: ValidationInfo):
            """Per-task keys must name tasks the arm trains (known at validate from the arm's tasks)."""
            tasks = (info.context or {}).get("tasks")
            if isinstance(value, dict) and tasks is not None:
                for key in value:
                    if key not in tasks:
                        raise ValueError(f"'{key}' is not a task of this arm; {did_you_mean(key, tasks)}")
            return value

    def wrap(self, model, params, ctx):
        from harness.methods.multi_task_model import MultiTaskModel

        headless = sorted(key for key, task in ctx.tasks.items() if not task_type(task["type"]).has_head)
        if headless:
            with_heads = [t.name for t in TASK_TYPES.values() if t.has_head]
            raise HarnessError(
                f"multi_task: no head for the task(s) {headless}",
                fix=f"multi_task trains task types {', '.join(with_heads)}",
            )
        # arms built outside a plan: their per-task keys checked against the tasks it spans
        self.Params.model_validate(params.model_dump(), context={"tasks": list(ctx.tasks)})
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # each sequence head has a pooler of its own; a shared one would be unused
        per_task = params.adapters == "per_task"
        encoder = self._adapters(model, params, ctx) if per_task else model.requires_grad_(True)
        return MultiTaskModel(encoder, ctx.tasks, adapters=per_task)

    @staticmethod
    def _adapters(model, params, ctx):
        from peft import LoraConfig, get_peft_model

        from harness.methods.lora import target_modules

        config = LoraConfig(
            r=params.r,
            lora_alpha=params.alpha,
            lora_dropout=params.dropout,
            target_modules=target_modules(params.target_modules, ctx.model_type),
        )
        keys = list(ctx.tasks)
        model = get_peft_model(model, config, adapter_name=keys[0])
        for key in keys[1:]:
            model.add_adapter(key, config)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)  # every task's adapter counts as trainable
        return model

    def save(self, model, path) -> bool:
        """Per-task adapters (peft folders) and the heads (safetensors); a full encoder is not kept."""
        if not model.adapters:
            return False
        from safetensors.torch import save_file

        model.encoder.save_pretrained(path, selected_adapters=list(model.heads))
        save_file({k: v.contiguous() for k, v in model.heads.state_dict().items()}, str(path / "heads.safetensors"))
        return True
