"""An arm that spans tasks (multi_task): one shared encoder with a head per task, trained jointly
(harness.training.multi_task_objective), then each task evaluated as its single-task arm would be. The
phases are harness.execution.arm_lifecycle's, so it evaluates in budget.eval_precision and scores
each task's head on the experiment's golden sets like any other arm.

Writes OUT_DIR/tasks/<task>/{result.json,predictions.jsonl}, one ordinary ArmResult per task
(task_key = that task), and returns the arm's own summary (costs, totals, artifacts.tasks), which
harness.execution.arm_process writes as OUT_DIR/result.json. The runner records the per-task results
(harness.results.task_results), so reports, comparisons, the budget audit and the gate see a
multi-task arm in each of its tasks like any other arm."""

from __future__ import annotations

from pathlib import Path

from harness import models
from harness.execution.arm_common import arm_summary, emit
from harness.execution.arm_lifecycle import ArmLifecycle, Trained
from harness.execution.provenance import provenance
from harness.methods import ArmContext
from harness.planning.plan import Arm
from harness.results.arm_result import ArmResult, now
from harness.tasks import task_type
from harness.training import checkpoint, get_objective
from harness.training.multi_task_objective import TaskData, train


class MultiTask:
    """The ArmShape of an arm over several tasks (arm.tasks)."""

    kind = "encoder"

    def load_model(self, life: ArmLifecycle, model_dir: Path, tokenizer):
        import torch

        arm = life.arm
        encoder = models.load_model(
            model_dir,
            "encoder",
            dtype=arm.model.dtype,
            tokenizer=tokenizer,
            trust_remote_code=arm.model.trust_remote_code,
        )
        tasks = {
            key: {"type": s.task["type"], "num_labels": len(s.task["labels"]) if s.task.get("labels") else None}
            for key, s in life.tasks.items()
        }
        ctx = ArmContext(
            kind="encoder",
            task_type="multi_task",
            model_type=encoder.config.model_type,
            device="cuda" if torch.cuda.is_available() else "cpu",
            seed=arm.seed,
            model_dir=str(model_dir),
            tasks=tasks,
            precision=arm.budget.precision,
        )
        return encoder, ctx

    def train(self, life: ArmLifecycle) -> Trained:
        """Interleaved batches, each task reading its single-task example order."""
        arm, tokenizer = life.arm, life.tokenizer
        emit("phase", phase="train", total=arm.budget.max_steps * len(life.tasks))
        data = {}
        for key, s in life.tasks.items():
            objective = get_objective(task_type(s.task["type"]).objective)
            batcher = objective.batcher(tokenizer, s.train, s.task, arm.budget)
            data[key] = TaskData(batcher, [e["id"] for e in s.train], objective.loss_items)
        consumed, curves = train(
            life.model,
            data,
            arm.budget,
            lr=arm.params.lr,
            head_lr=arm.params.head_lr,
            loss_weights=arm.params.loss_weights,
            on_step=lambda s, n, loss: emit("step", step=s, total=n, loss=round(loss, 4)),
            checkpoint_dir=checkpoint.folder_for(life.out_dir),
        )
        return Trained(consumed, {key: {"train_loss": curve} for key, curve in curves.items()})

    def for_task(self, model, key: str):
        return model.for_task(key)

    def write(self, life: ArmLifecycle) -> ArmResult:
        """tasks/<task>/ per task; the arm's own summary with the shared costs and totals."""
        arm, summary = life.arm, arm_summary(life.arm)
        for key in life.tasks:
            folder = life.out_dir / "tasks" / key
            life.write_predictions(key, folder)
            result = life.task_result(
                key, {**summary, "name": f"{arm.name} · {key}", "task_key": key, "slug": f"{arm.slug}/tasks/{key}"}
            )
            result.metrics_detail["multi_task"] = {
                "tasks": list(life.tasks),
                "shared_costs": "memory, parameters, load/train seconds: the whole arm",
            }
            result.write(folder / "result.json")
        consumed = life.trained.consumed
        totals = {k: sum(getattr(c, k) for c in consumed.values()) for k in ("steps", "examples", "tokens")}
        return ArmResult(
            arm=summary,
            status="ok",
            consumed={
                **totals,
                "seconds": life.train_seconds,
                "per_task": {k: c.to_dict() for k, c in consumed.items()},
            },
            metrics=life.shared_costs(),
            provenance=provenance(life.model_dir, {"data": {}}),
            artifacts={"tasks": "tasks", **({"adapter": life.saved.name} if life.saved else {})},
            started_at=life.started,
            finished_at=now(),
        )


def execute_multi_task(arm: Arm, out_dir: Path) -> ArmResult | None:
    return ArmLifecycle(arm, out_dir, MultiTask()).run()
