"""An arm's stages in order on its wrapped model: each stage gets its own step budget, the
preference metrics are measured on held-out pairs at the end (against the model as it stood
before the first preference stage), and what each stage consumed is kept in consumed.extra."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.config.schema import Budget
from harness.data.order import order_digest
from harness.data.preference import task_pairs
from harness.eval.preference_metrics import PreferenceProbe
from harness.plugins import Params
from harness.stages.registry import StageContext, get_stage
from harness.training.consumed import Consumed


def stage_budget(budget: Budget, name: str, params: Params | None = None) -> Budget:
    """The arm's budget with max_steps set to this stage's steps: what its params ask for (cpt's
    token budget), else budget.stage_steps, else max_steps."""
    stage = get_stage(name)
    steps = stage.steps_for(params or stage.Params(), budget) or budget.stage_steps.get(name, budget.max_steps)
    return budget.model_copy(update={"max_steps": steps})


def combine(parts: list[tuple[str, Consumed]]) -> Consumed:
    total = Consumed(order_hash=order_digest([f"{name}:{c.order_hash}" for name, c in parts]))
    for _, c in parts:
        total.steps += c.steps
        total.examples += c.examples
        total.tokens += c.tokens
        total.seconds = round(total.seconds + c.seconds, 3)
        total.planned_steps += c.planned_steps
        total.stopped_early = total.stopped_early or c.stopped_early
        total.stop_reason = total.stop_reason or c.stop_reason
    total.extra = {"stages": [{"name": name, **c.to_dict()} for name, c in parts]}
    return total


def run_stages(
    stages: list[dict],
    *,
    model,
    tokenizer,
    train,
    test,
    task,
    budget,
    method,
    kind,
    method_lr,
    seed,
    emit=None,
    work_dir: Path | None = None,
    base_dir: Path | None = None,
    arm_dir: Path | None = None,
    model_dir: Path | None = None,
    method_params: Params | None = None,
):
    """-> (Consumed, curves, metrics, ci). `stages` is the arm's resolved list of {name, params};
    each stage receives its params validated by its own Params model."""
    max_len = budget.max_seq_len

    def pairs(count: int) -> list[dict]:
        return task_pairs(task, train, "train", tokenizer, seed=seed, max_len=max_len, count=count)

    probe, held_out = None, []
    if kind == "causal_lm":  # the preference metrics are log-probs of completions: decoders only
        held_out = task_pairs(task, test, "test", tokenizer, seed=seed + 1, max_len=max_len)[
            : budget.alignment.eval_pairs
        ]
        probe = PreferenceProbe(held_out, tokenizer, max_len=max_len, batch_size=budget.eval_batch_size)
    parts, curves, metrics, ci = [], {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="harness-stage-") as tmp:
        for spec in stages:
            stage = get_stage(spec["name"])
            params = stage.Params.model_validate(spec["params"])
            if stage.preference and probe is not None and probe.snapshot is None:
                probe.take_snapshot(model)  # the reference of the arm's preference metrics
            sb = stage_budget(budget, spec["name"], params)
            if emit:
                emit("phase", phase=f"train {spec['name']}", total=sb.max_steps)
            on_step = (lambda s, t, loss: emit("step", step=s, total=t, loss=round(loss, 4))) if emit else None
            ctx = StageContext(
                model=model,
                tokenizer=tokenizer,
                train=train,
                task=task,
                budget=sb,
                method=method,
                kind=kind,
                method_lr=method_lr,
                work_dir=Path(work_dir or tmp) / spec["name"],
                pairs=pairs,
                on_step=on_step,
                base_dir=base_dir,
                held_out=held_out,
                arm_dir=arm_dir,
                model_dir=model_dir,
                method_params=method_params,
            )
            outcome = stage.train(ctx, params)
            parts.append((spec["name"], outcome.consumed))
            curves.update({k: v for k, v in outcome.curves.items() if v})
            metrics.update(outcome.metrics)
            ci.update(outcome.ci)
    model.eval()
    if probe is not None:
        metrics.update(probe.measure(model))
    return combine(parts), curves, metrics, ci
