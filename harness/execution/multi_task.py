"""One arm that spans tasks (multi_task), inside its own process: load every task, wrap the
shared encoder, train jointly, then evaluate each task as its single-task arm would be evaluated.

Writes OUT_DIR/tasks/<task>/{result.json,predictions.jsonl}, one ordinary ArmResult per task
(task_key = that task), and returns the arm's own summary (costs, totals, artifacts.tasks), which
harness.execution.arm_process writes as OUT_DIR/result.json. The runner records the per-task results
(harness.results.task_results), so reports, comparisons, the budget audit and the gate see a
multi-task arm in each of its tasks like any other arm."""

from __future__ import annotations

import time
from pathlib import Path

from harness import models
from harness.data.task_examples import load_task
from harness.eval import predict, profile, quality
from harness.eval.predict_heads import encoder_predictor_for
from harness.execution.arm_common import arm_summary, emit, seed_everything
from harness.execution.provenance import provenance
from harness.methods import ArmContext, get_method
from harness.results.arm_folder import write_predictions
from harness.results.arm_result import ArmResult, now
from harness.tasks import task_type
from harness.training import checkpoint, get_objective
from harness.training.distributed import is_main_process
from harness.training.multi_task_objective import TaskData, train


def execute_multi_task(arm, out_dir: Path):
    import torch

    started, memory, method = now(), profile.MemoryProfiler(), get_method(arm.method)
    emit("phase", phase="data")
    loaded = {key: load_task(task, arm.budget) for key, task in arm.tasks.items()}  # (train, test, task)

    emit("phase", phase="load")
    t0 = time.perf_counter()
    model_dir = models.resolve_model_dir(arm.model["source"], base_dir=Path(arm.base_dir))
    tokenizer = models.load_tokenizer(model_dir)
    encoder = models.load_model(
        model_dir,
        "encoder",
        dtype=arm.model.get("dtype", "auto"),
        tokenizer=tokenizer,
        trust_remote_code=arm.model.get("trust_remote_code", False),
    )
    tasks = {
        key: {"type": task["type"], "num_labels": len(task["labels"]) if task.get("labels") else None}
        for key, (_, _, task) in loaded.items()
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
    seed_everything(arm.seed)
    model = method.wrap(encoder, arm.params, ctx)
    load_seconds, counts = time.perf_counter() - t0, profile.parameter_counts(model)

    emit("phase", phase="train", total=arm.budget.max_steps * len(loaded))
    seed_everything(arm.seed)
    objectives = {key: get_objective(task_type(task["type"]).objective) for key, (_, _, task) in loaded.items()}
    data = {
        key: TaskData(
            objectives[key].batcher(tokenizer, tr, task, arm.budget), [e["id"] for e in tr], objectives[key].loss_items
        )
        for key, (tr, _, task) in loaded.items()
    }
    consumed, curves = train(
        model,
        data,
        arm.budget,
        lr=float(arm.params["lr"]),
        head_lr=arm.params["head_lr"],
        loss_weights=arm.params["loss_weights"],
        on_step=lambda s, n, loss: emit("step", step=s, total=n, loss=round(loss, 4)),
        checkpoint_dir=out_dir / checkpoint.FOLDER,
    )
    if not is_main_process():
        return None  # a multi-device arm: rank 0 evaluates and writes, the other ranks are done
    checkpoint.discard(out_dir / checkpoint.FOLDER)
    model.eval()

    evaluated = {}
    for key, (_, test, task) in loaded.items():
        emit("phase", phase=f"eval {key}", total=len(test))
        predictor = encoder_predictor_for(model.for_task(key), tokenizer, task, arm.budget.max_seq_len)
        evaluated[key] = predict.run_predictions(
            predictor, test, task, batch_size=arm.budget.eval_batch_size, latency_examples=arm.budget.latency_examples
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = out_dir / "adapter" if method.save(model, out_dir / "adapter") else None
    train_seconds = round(sum(c.seconds for c in consumed.values()), 3)
    shared = {
        **memory.peaks_mb(),
        **counts,
        "load_seconds": round(load_seconds, 3),
        "train_seconds": train_seconds,
        "saved_mb": profile.saved_mb(model, saved, trained=True),
    }
    summary = arm_summary(arm)
    for key, (rows, eval_cost, conditions) in evaluated.items():
        task, c = loaded[key][2], consumed[key]
        assessed = quality.assess(rows, task, arm.budget, base_dir=Path(arm.base_dir), seed=arm.seed)
        folder = out_dir / "tasks" / key
        folder.mkdir(parents=True, exist_ok=True)
        predictions = write_predictions(folder, rows)
        ArmResult(
            arm={**summary, "name": f"{arm.name} · {key}", "task_key": key, "slug": f"{arm.slug}/tasks/{key}"},
            status="ok",
            consumed=c.to_dict(),
            metrics={
                **assessed.metrics,
                **shared,
                **eval_cost,
                "train_tokens_per_s": round(c.tokens / c.seconds, 2) if c.seconds else None,
            },
            ci=assessed.ci,
            metrics_detail={
                **assessed.detail,
                "cost_conditions": conditions,
                "multi_task": {
                    "tasks": list(loaded),
                    "shared_costs": "memory, parameters, load/train seconds: the whole arm",
                },
            },
            curves={"train_loss": curves[key]},
            provenance=provenance(model_dir, task),
            artifacts={"predictions": predictions},
            started_at=started,
            finished_at=now(),
        ).write(folder / "result.json")
    totals = {k: sum(getattr(c, k) for c in consumed.values()) for k in ("steps", "examples", "tokens")}
    return ArmResult(
        arm=summary,
        status="ok",
        consumed={**totals, "seconds": train_seconds, "per_task": {k: c.to_dict() for k, c in consumed.items()}},
        metrics=shared,
        provenance=provenance(model_dir, {"data": {}}),
        artifacts={"tasks": "tasks", **({"adapter": saved.name} if saved else {})},
        started_at=started,
        finished_at=now(),
    )
