"""A single-task arm: one model (with the head its task needs) trained by the method's objective
or by the arm's stages, on one task. The phases are harness.execution.arm_lifecycle's;
harness.execution.arm_process calls execute_arm."""

from __future__ import annotations

from pathlib import Path

from harness import models
from harness.execution.arm_common import emit
from harness.execution.arm_lifecycle import ArmLifecycle, Trained
from harness.methods import ArmContext
from harness.planning.plan import Arm
from harness.results.arm_result import ArmResult
from harness.stages.run import run_stages
from harness.tasks import encoder_head
from harness.tasks import objective_name as objective_for_task
from harness.training import checkpoint, get_objective
from harness.training.saving import FOLDER as FULL_MODEL


class SingleTask:
    """The ArmShape of an arm on one task (arm.task)."""

    def __init__(self, arm: Arm):
        self.kind = arm.model.kind

    def load_model(self, life: ArmLifecycle, model_dir: Path, tokenizer):
        import torch

        arm, task = life.arm, life.tasks[life.arm.task_key].task
        labels = task.get("labels")
        ctx_args = dict(
            kind=self.kind,
            task_type=task["type"],
            device="cuda" if torch.cuda.is_available() else "cpu",
            seed=arm.seed,
            num_labels=len(labels) if labels else None,
            precision=arm.budget.precision,
        )
        head = encoder_head(self.kind, task["type"])
        labelled = bool(head and head.labelled_head)
        model = models.load_model(
            model_dir,
            self.kind,
            num_labels=len(labels) if labelled else None,
            head_class=head.head if head else None,
            id2label=dict(enumerate(labels)) if labelled else None,
            dtype=arm.model.dtype,
            extra_kwargs=life.method.load_kwargs(arm.params, ArmContext(model_type="", **ctx_args)),
            trust_remote_code=arm.model.trust_remote_code,
            tokenizer=tokenizer,
            weights=life.reads_weights,
        )
        return model, ArmContext(model_type=model.config.model_type, model_dir=str(model_dir), **ctx_args)

    def train(self, life: ArmLifecycle) -> Trained:
        """The arm's stages in order (harness.stages), else the method's objective in the shared loop."""
        arm, key = life.arm, life.arm.task_key
        splits = life.tasks[key]
        if arm.stages:
            consumed, curves, metrics, ci = run_stages(
                arm.stages,
                model=life.model,
                tokenizer=life.tokenizer,
                train=splits.train,
                test=splits.test,
                task=splits.task,
                budget=arm.budget,
                method=life.method,
                kind=self.kind,
                method_lr=arm.params.lr,
                seed=arm.seed,
                emit=emit,
                base_dir=life.base_dir,
                arm_dir=life.out_dir,
                model_dir=life.model_dir,
                method_params=arm.params,
            )
            return Trained({key: consumed} if consumed else {}, {key: curves}, metrics, ci)
        emit("phase", phase="train", total=arm.budget.max_steps)
        objective = get_objective(objective_for_task(life.method, self.kind, splits.task["type"]))
        consumed, curve = objective.train(
            life.model,
            life.tokenizer,
            splits.train,
            splits.task,
            arm.budget,
            arm.params.lr,
            on_step=lambda step, total, loss: emit("step", step=step, total=total, loss=round(loss, 4)),
            checkpoint_dir=checkpoint.folder_for(life.out_dir),
        )
        return Trained({key: consumed}, {key: {"train_loss": curve} if curve else {}})

    def for_task(self, model, key: str):
        return model

    def write(self, life: ArmLifecycle) -> ArmResult:
        """OUT_DIR/predictions.jsonl, and the arm's one result (with its adapter)."""
        key = life.arm.task_key
        life.write_predictions(key, life.out_dir)
        result = life.task_result(key)
        if life.saved:
            result.artifacts["adapter" if life.saved.name != FULL_MODEL else "model"] = life.saved.name
        return result


def execute_arm(arm: Arm, out_dir: Path) -> ArmResult | None:
    return ArmLifecycle(arm, out_dir, SingleTask(arm)).run()
