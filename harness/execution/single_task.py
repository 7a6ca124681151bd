"""One arm, inside its own process: models.load -> method.wrap -> objective.train -> eval.

`python -m harness.execute ARM_JSON OUT_DIR` writes OUT_DIR/result.json (atomically) and
progress events on stdout as lines starting with EVENT_PREFIX, which the runner reads.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

EVENT_PREFIX = "@@harness "


def emit(kind: str, **data) -> None:
    print(EVENT_PREFIX + json.dumps({"event": kind, **data}), flush=True)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def execute_arm(arm, out_dir: Path):
    import torch

    from harness import models
    from harness.data.tasks import load_task
    from harness.eval import predict, profile, quality
    from harness.eval.forgetting import Forgetting
    from harness.methods import ArmContext, get_method
    from harness.objectives import get_objective
    from harness.results import ArmResult, now

    started = now()
    memory = profile.MemoryProfiler()
    method = get_method(arm.method)
    kind = arm.model["kind"]
    from harness.objectives.heads import encoder_head, objective_name as objective_for_task

    objective_name = objective_for_task(method, kind, arm.task["type"])

    emit("phase", phase="data")
    train, test, task = load_task(arm.task, arm.budget)
    labels = task.get("labels")

    emit("phase", phase="load")
    t0 = time.perf_counter()
    model_dir = models.resolve_model_dir(arm.model["source"], base_dir=Path(arm.base_dir))
    tokenizer = models.load_tokenizer(model_dir)
    ctx_args = dict(kind=kind, task_type=task["type"], device="cuda" if torch.cuda.is_available() else "cpu",
                    seed=arm.seed, num_labels=len(labels) if labels else None)
    probe = ArmContext(model_type="", **ctx_args)
    # A new head (an encoder's classifier) is initialised inside from_pretrained, from torch's
    # global generator, which torch seeds at random in every process: seed it, or the same arm
    # (same hash) trains from a different head each run.
    seed_everything(arm.seed)
    head = encoder_head(kind, task["type"])
    labelled = bool(head and head.labelled)
    model = models.load_model(
        model_dir, kind, num_labels=len(labels) if labelled else None, head_class=head.auto_class if head else None,
        id2label=dict(enumerate(labels)) if labelled else None, dtype=arm.model.get("dtype", "auto"),
        extra_kwargs=method.load_kwargs(arm.params, probe), trust_remote_code=arm.model.get("trust_remote_code", False),
        tokenizer=tokenizer)
    ctx = ArmContext(model_type=model.config.model_type, model_dir=str(model_dir), **ctx_args)
    t_general = time.perf_counter()  # the base's loss on a general text, for forgetting; not load time
    general = Forgetting.measure_before(model, tokenizer, kind=kind, budget=arm.budget, base_dir=Path(arm.base_dir),
                                        trained=objective_name != "none")
    t0 += time.perf_counter() - t_general
    seed_everything(arm.seed)  # adapter and head initialisation: the same for every arm
    if objective_name == "none":
        for p in model.parameters():
            p.requires_grad_(False)
    model = method.wrap(model, arm.params, ctx)
    load_seconds = time.perf_counter() - t0
    counts = profile.parameter_counts(model)

    consumed, curve, stage_curves, stage_metrics = None, [], {}, {}
    if getattr(arm, "stages", None):
        seed_everything(arm.seed)
        consumed, stage_curves, stage_metrics = _run_stages(arm, model, tokenizer, train, test, task, method, kind)
    elif objective_name != "none":
        emit("phase", phase="train", total=arm.budget["max_steps"])
        seed_everything(arm.seed)  # dropout masks: the same stream for every arm
        objective = get_objective(objective_name)
        consumed, curve = objective.train(
            model, tokenizer, train, task, arm.budget, float(arm.params["lr"]),
            on_step=lambda step, total, loss: emit("step", step=step, total=total, loss=round(loss, 4)))
    model.eval()

    emit("phase", phase="eval", total=len(test))
    shots = method.shots(arm.params, train, ctx)
    predictor = predict.make_predictor(model, tokenizer, kind=kind, task=task, budget=arm.budget, shots=shots)
    rows, eval_cost = predict.run_predictions(
        predictor, test, task, batch_size=arm.budget["eval_batch_size"],
        latency_examples=arm.budget["latency_examples"], on_batch=lambda done, total: emit("eval", done=done, total=total))
    peaks = memory.peaks_mb()  # before the scorers below (BERTScore loads a model of its own)
    assessed = quality.assess_arm(rows, test, task, arm, model=model, tokenizer=tokenizer, kind=kind, shots=shots,
                                  general=general, trained=objective_name != "none")

    from harness.eval.golden import score_arm_on_golden_sets

    emit("phase", phase="golden")
    golden = score_arm_on_golden_sets(arm, model, tokenizer, kind=kind, task=task)

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    artifacts = {"predictions": "predictions.jsonl"}
    saved = _save_trained_part(model, out_dir, method) if objective_name != "none" else None
    if saved:
        artifacts["adapter"] = saved.name
    cost = {
        **peaks, **counts, **eval_cost, "load_seconds": round(load_seconds, 3),
        "saved_mb": profile.saved_mb(model, out_dir / saved.name if saved else None, trained=objective_name != "none"),
        "train_seconds": consumed.seconds if consumed else None,
        "train_tokens_per_s": round(consumed.tokens / consumed.seconds, 2) if consumed and consumed.seconds else None,
    }
    return ArmResult(
        arm=arm_summary(arm), status="ok", consumed=consumed.to_dict() if consumed else None,
        metrics={**assessed.metrics, **stage_metrics, **cost}, ci=assessed.ci, metrics_detail=assessed.detail,
        curves={**({"train_loss": curve} if curve else {}), **stage_curves},
        provenance=provenance(model_dir, task), artifacts=artifacts, started_at=started, finished_at=now(),
        golden=golden)


def _run_stages(arm, model, tokenizer, train, test, task, method, kind):
    """An arm with `stages:` trains them in order (harness.stages) instead of its objective."""
    from harness.stages.run import run_stages

    return run_stages(arm.stages, model=model, tokenizer=tokenizer, train=train, test=test, task=task,
                      budget=arm.budget, method=method, kind=kind, method_lr=float(arm.params["lr"]),
                      seed=arm.seed, emit=emit)


def _save_trained_part(model, out_dir: Path, method) -> Path | None:
    """Adapters are small and worth keeping; a fully fine-tuned base is not saved by default."""
    path = out_dir / "adapter"
    return path if method.save(model, path) else None


def arm_summary(arm) -> dict:
    return {"name": arm.name, "method": arm.method, "model_key": arm.model_key, "model": arm.model["source"],
            "kind": arm.model["kind"], "task_key": arm.task_key, "params": arm.params, "hash": arm.hash,
            "slug": arm.slug, "seed": arm.seed, **({"tasks": list(arm.tasks)} if getattr(arm, "tasks", None) else {}),
            **({"stages": arm.stages} if getattr(arm, "stages", None) else {})}


def provenance(model_dir: Path, task: dict) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from harness.eval.profile import device_name

    packages = {}
    for name in ("harness", "torch", "transformers", "peft", "bitsandbytes", "trl", "scikit-learn", "rouge-score",
                 "sacrebleu", "bert-score", "scipy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    fingerprint = None
    if task["data"].get("prepared"):
        from harness.data import prepared

        info = prepared.prepared_dir(task["data"]["prepared"]) / "fingerprint.json"
        fingerprint = json.loads(info.read_text()).get("sha256") if info.is_file() else None
    return {"packages": packages, "python": platform.python_version(), "device": device_name(),
            "model_dir": str(model_dir), "data_fingerprint": fingerprint, "git_commit": git_commit()}


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str]) -> int:
    from harness.plan import Arm
    from harness.results import ArmResult, now

    arm = Arm.from_json(Path(argv[0]).read_text())
    out_dir = Path(argv[1])
    threads = os.environ.get("HARNESS_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        if arm.tasks:  # a method spanning tasks (multi_task): one result per task under out_dir/tasks
            from harness.execute_multi import execute_multi_task

            result = execute_multi_task(arm, out_dir)
        else:
            result = execute_arm(arm, out_dir)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # the arm fails; the runner goes on with the others
        from harness.errors import HarnessError

        message = str(err) if isinstance(err, HarnessError) else f"{type(err).__name__}: {err}"
        (out_dir / "traceback.txt").write_text(traceback.format_exc())
        result = ArmResult(arm=arm_summary(arm), status="failed", error=message, finished_at=now(),
                           artifacts={"traceback": "traceback.txt"})
    result.write(out_dir / "result.json")
    emit("done", status=result.status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
