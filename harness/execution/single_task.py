"""One single-task arm, inside its own process: models.load -> method.wrap -> objective.train
(or its stages) -> eval -> an ArmResult. harness.execution.arm_process calls it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness import models
from harness.data.tasks import load_task
from harness.eval import base_cache, precision, predict, profile, quality
from harness.eval.domain import DomainPerplexity
from harness.eval.forgetting import Forgetting
from harness.eval.phases import PhaseClock
from harness.execution.arm_common import arm_summary, emit, seed_everything
from harness.execution.provenance import evaluation_provenance, provenance
from harness.golden.scoring import score_arm_on_golden_sets
from harness.methods import ArmContext, get_method
from harness.results.arm_result import ArmResult, now
from harness.stages.run import run_stages
from harness.tasks import encoder_head
from harness.tasks import objective_name as objective_for_task
from harness.training import checkpoint, get_objective
from harness.training.devices import is_main_process
from harness.training.fsdp import evaluable
from harness.training.saving import FOLDER, save_full_model


def execute_arm(arm, out_dir: Path):
    import torch

    started = now()
    clock = PhaseClock()
    memory = profile.MemoryProfiler()
    method = get_method(arm.method)
    kind = arm.model["kind"]
    objective_name = objective_for_task(method, kind, arm.task["type"])

    emit("phase", phase="data")
    clock.start("data")
    train, test, task = load_task(arm.task, arm.budget)
    labels = task.get("labels")

    emit("phase", phase="load")
    clock.start("load")
    t0 = time.perf_counter()
    model_dir = models.resolve_model_dir(arm.model["source"], base_dir=Path(arm.base_dir))
    tokenizer = models.load_tokenizer(model_dir)
    ctx_args = dict(
        kind=kind,
        task_type=task["type"],
        device="cuda" if torch.cuda.is_available() else "cpu",
        seed=arm.seed,
        num_labels=len(labels) if labels else None,
        precision=arm.budget.precision,
    )
    probe = ArmContext(model_type="", **ctx_args)
    # A new head (an encoder's classifier) is initialised inside from_pretrained, from torch's
    # global generator, which torch seeds at random in every process: seed it, or the same arm
    # (same hash) trains from a different head each run.
    seed_everything(arm.seed)
    head = encoder_head(kind, task["type"])
    labelled = bool(head and head.labelled_head)
    model = models.load_model(
        model_dir,
        kind,
        num_labels=len(labels) if labelled else None,
        head_class=head.head if head else None,
        id2label=dict(enumerate(labels)) if labelled else None,
        dtype=arm.model.get("dtype", "auto"),
        extra_kwargs=method.load_kwargs(arm.params, probe),
        trust_remote_code=arm.model.get("trust_remote_code", False),
        tokenizer=tokenizer,
    )
    ctx = ArmContext(model_type=model.config.model_type, model_dir=str(model_dir), **ctx_args)
    t_general = time.perf_counter()  # the base's loss on a general text, for forgetting; not load time
    clock.start("forgetting_before")
    identity = base_cache.model_identity(
        arm.model["source"], model_dir, model, base_dir=Path(arm.base_dir), precision="fp32"
    )
    general = Forgetting.measure_before(
        model,
        tokenizer,
        kind=kind,
        budget=arm.budget,
        base_dir=Path(arm.base_dir),
        trained=objective_name != "none",
        model_identity=identity,
    )
    domain = DomainPerplexity.measure_before(
        model, tokenizer, kind=kind, budget=arm.budget, base_dir=Path(arm.base_dir)
    )
    t0 += time.perf_counter() - t_general
    clock.start("load")
    seed_everything(arm.seed)  # adapter and head initialisation: the same for every arm
    if objective_name == "none":
        for p in model.parameters():
            p.requires_grad_(False)
    loaded = model
    model = method.wrap(model, arm.params, ctx)
    untouched_base = objective_name == "none" and model is loaded  # golden results shareable across arms
    load_seconds = time.perf_counter() - t0
    counts = profile.parameter_counts(model)

    consumed, curve, stage_curves, stage_metrics, stage_ci = None, [], {}, {}, {}
    clock.start("train")
    if getattr(arm, "stages", None):
        seed_everything(arm.seed)
        consumed, stage_curves, stage_metrics, stage_ci = _run_stages(
            arm, model, tokenizer, train, test, task, method, kind, out_dir=out_dir, model_dir=model_dir
        )
    elif objective_name != "none":
        emit("phase", phase="train", total=arm.budget.max_steps)
        seed_everything(arm.seed)  # dropout masks: the same stream for every arm
        objective = get_objective(objective_name)
        consumed, curve = objective.train(
            model,
            tokenizer,
            train,
            task,
            arm.budget,
            float(arm.params["lr"]),
            on_step=lambda step, total, loss: emit("step", step=step, total=total, loss=round(loss, 4)),
            checkpoint_dir=out_dir / checkpoint.FOLDER,
        )
    model = evaluable(model)  # an FSDP-trained model: its plain copy, gathered to rank 0
    if not is_main_process():
        return None  # a multi-device arm: rank 0 evaluates and writes, the other ranks are done
    model.eval()
    # Saved and measured for forgetting in the precision it trained in, before evaluation casts it.
    clock.start("save")
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = _save_trained_part(model, out_dir, method) if objective_name != "none" else None
    if objective_name != "none" and saved is None and arm.budget.save == "full":
        saved = save_full_model(model, tokenizer, out_dir)  # a full fine-tune, when asked to keep it
    trained_bytes = profile.saved_mb(model, out_dir / saved.name if saved else None, trained=objective_name != "none")
    if general is not None:
        clock.start("forgetting_after")
        general.measure_after(model, tokenizer)
    eval_precision = arm.budget.eval_precision
    model = precision.for_evaluation(model, eval_precision)

    emit("phase", phase="eval", total=len(test))
    shots = method.shots(arm.params, train, ctx)
    predictor = predict.make_predictor(model, tokenizer, kind=kind, task=task, budget=arm.budget, shots=shots)
    rows, eval_cost, conditions = predict.run_predictions(
        predictor,
        test,
        task,
        batch_size=arm.budget.eval_batch_size,
        latency_examples=arm.budget.latency_examples,
        on_batch=lambda done, total: emit("eval", done=done, total=total),
        clock=clock,
    )
    peaks = memory.peaks_mb()  # before the scorers below (BERTScore loads a model of its own)
    clock.start("quality")
    assessed = quality.assess_arm(
        rows,
        test,
        task,
        arm,
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        shots=shots,
        general=general,
        domain=domain,
        trained=objective_name != "none",
    )

    emit("phase", phase="golden")
    clock.start("golden")
    golden = score_arm_on_golden_sets(
        arm, model, tokenizer, kind=kind, task=task, base_identity=identity if untouched_base else None
    )

    clock.start("save")
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    artifacts = {"predictions": "predictions.jsonl"}
    checkpoint.discard(out_dir / checkpoint.FOLDER)  # finished: the result is what a rerun reuses
    if saved:
        artifacts["adapter" if saved.name != FOLDER else "model"] = saved.name
    cost = {
        **peaks,
        **counts,
        **eval_cost,
        "load_seconds": round(load_seconds, 3),
        "saved_mb": trained_bytes,
        "train_seconds": consumed.seconds if consumed else None,
        "train_tokens_per_s": round(consumed.tokens / consumed.seconds, 2) if consumed and consumed.seconds else None,
    }
    detail = {**assessed.detail, "cost_conditions": conditions, "phase_seconds": clock.breakdown()}
    return ArmResult(
        arm=arm_summary(arm),
        status="ok",
        consumed=consumed.to_dict() if consumed else None,
        metrics={**assessed.metrics, **stage_metrics, **cost},
        ci={**assessed.ci, **stage_ci},
        metrics_detail=detail,
        curves={**({"train_loss": curve} if curve else {}), **stage_curves},
        provenance={**provenance(model_dir, task), **evaluation_provenance(kind, task, eval_precision)},
        artifacts=artifacts,
        started_at=started,
        finished_at=now(),
        golden=golden,
    )


def _run_stages(arm, model, tokenizer, train, test, task, method, kind, *, out_dir: Path, model_dir: Path):
    """An arm with `stages:` trains them in order (harness.stages) instead of its objective."""

    return run_stages(
        arm.stages,
        model=model,
        tokenizer=tokenizer,
        train=train,
        test=test,
        task=task,
        budget=arm.budget,
        method=method,
        kind=kind,
        method_lr=float(arm.params["lr"]),
        seed=arm.seed,
        emit=emit,
        base_dir=Path(arm.base_dir),
        arm_dir=out_dir,
        model_dir=model_dir,
        method_params=arm.params,
    )


def _save_trained_part(model, out_dir: Path, method) -> Path | None:
    """Adapters are small and worth keeping; a fully fine-tuned base is not saved by default."""
    path = out_dir / "adapter"
    return path if method.save(model, path) else None
