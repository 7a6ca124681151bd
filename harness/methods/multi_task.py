"""Multi-task heads on one encoder: a plan-level arm over several tasks (`spans_tasks`), trained
jointly with interleaved batches (harness.objectives.multi_task), each task seeing exactly the
examples its single-task arm would. `adapters: per_task` freezes the encoder and gives every task
a LoRA adapter of its own (peft multi-adapter), so tasks cannot interfere."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.methods.registry import Method, register

ADAPTER_MODES = ("none", "per_task")


@register("multi_task")
class MultiTask(Method):
    description = ("one shared encoder, one head per task, interleaved batches; loss_weights and head_lr per task; "
                   "adapters: per_task = a LoRA adapter per task on a frozen encoder")
    applies_to = frozenset({"encoder"})
    objective = {"encoder": "multi_task"}
    spans_tasks = True
    defaults = {"lr": 5e-5, "head_lr": 1e-3, "loss_weights": {}, "adapters": "none",
                "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "auto"}

    def wrap(self, model, params, ctx):
        from harness.methods.multi_task_model import HEADS, MultiTaskModel

        headless = sorted(key for key, task in ctx.tasks.items() if task["type"] not in HEADS)
        if headless:
            raise HarnessError(f"multi_task: no head for the task(s) {headless}",
                               fix=f"multi_task trains task types {', '.join(HEADS)}")
        if params["adapters"] not in ADAPTER_MODES:
            raise HarnessError(f"multi_task: unknown adapters mode '{params['adapters']}'",
                               fix=f"use one of: {', '.join(ADAPTER_MODES)}")
        unknown = set(params["loss_weights"]) - set(ctx.tasks)
        if unknown:
            raise HarnessError(f"multi_task: loss_weights names tasks the arm does not train: {sorted(unknown)}",
                               fix=f"use the arm's tasks: {', '.join(ctx.tasks)}")
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # each sequence head has a pooler of its own; a shared one would be unused
        per_task = params["adapters"] == "per_task"
        encoder = self._adapters(model, params, ctx) if per_task else model.requires_grad_(True)
        return MultiTaskModel(encoder, ctx.tasks, adapters=per_task)

    @staticmethod
    def _adapters(model, params, ctx):
        from peft import LoraConfig, get_peft_model

        from harness.methods.lora import target_modules

        config = LoraConfig(r=int(params["r"]), lora_alpha=params["alpha"], lora_dropout=params["dropout"],
                            target_modules=target_modules(params["target_modules"], ctx.model_type))
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
