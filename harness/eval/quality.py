"""Quality of one arm from its prediction rows: every metric of the task type, a 95% bootstrap
confidence interval for each, per-item scores (for the pairwise tests across arms) and the
structured extras (per-class F1, confusion matrix, the BERTScore scorer used)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.config.schema import Budget
from harness.data.encoding import pad_batch
from harness.data.formatting import PromptFormatter
from harness.eval import metrics, stats
from harness.eval.bertscore import from_budget
from harness.eval.embedding import from_budget as embedding_from_budget
from harness.eval.likelihood import target_logprobs
from harness.eval.ner_metrics import per_type_f1
from harness.eval.text_metrics import confusion_matrix, per_class_f1


@dataclass
class Assessment:
    metrics: dict[str, float]
    ci: dict[str, list[float]]
    detail: dict = field(default_factory=dict)


def add_reference_nll(
    rows: list[dict], examples: list[dict], model, tokenizer, formatter, *, max_len: int, batch_size: int
) -> None:
    """Summed NLL and token count of each reference completion given its prompt (perplexity)."""

    device = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(examples), batch_size):
            batch = examples[i : i + batch_size]
            encoded = [formatter.encode(e, r["reference"], max_len) for e, r in zip(batch, rows[i : i + batch_size])]
            tensors, _ = pad_batch(encoded, tokenizer.pad_token_id)
            sums, counts = target_logprobs(
                model, *(tensors[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
            )
            for row, s, c in zip(rows[i : i + batch_size], sums.tolist(), counts.tolist()):
                row["reference_nll"], row["reference_tokens"] = round(-s, 5), int(c)


def assess(rows: list[dict], task: dict, budget: Budget, *, base_dir: Path | None = None, seed: int = 0) -> Assessment:
    task_type = task["type"]
    scorer = embedder = None
    if task_type == "generation":
        scorer, embedder = from_budget(budget, base_dir), embedding_from_budget(budget, base_dir)
    judged = None
    if task_type == "generation" and budget.judge and budget.judge.mode != "pairwise_arms":  # that one: run-level
        judged = judge_arm(rows, task, budget, base_dir)
    items = metrics.Items(
        preds=[r["prediction"] for r in rows],
        refs=[r["reference"] for r in rows],
        labels=task.get("labels"),
        rows=rows,
        bertscore=scorer,
        embedding=embedder,
    )
    values, item_stats = metrics.score_items(task_type, items)
    resamples = budget.bootstrap_resamples
    ci = {}
    for name, table in item_stats.items():
        interval = stats.bootstrap_ci(table, metrics.METRICS[name].reduce, resamples=resamples, seed=seed)
        if interval is not None:
            ci[name] = interval
    for i, row in enumerate(rows):  # per-item scores: what the pairwise tests across arms read
        row["scores"] = {
            name: round(float(table[i, 0]), 6)
            for name, table in item_stats.items()
            if metrics.per_item_score(metrics.METRICS[name]) and not np.isnan(table[i, 0])
        }
    detail = {"bootstrap": {"resamples": resamples, "seed": seed, "confidence": 1 - stats.ALPHA}}
    if task_type == "classification" and "macro_f1" in item_stats:
        detail.update(classification_detail(item_stats["macro_f1"], task.get("labels") or sorted(set(items.refs))))
    if task_type == "token_classification" and items.preds:
        detail["per_entity_type_f1"] = per_type_f1(items.preds, items.refs)
    if scorer is not None:
        detail["bertscore"] = scorer.detail()
    if embedder is not None:
        detail["embedding_cosine"] = embedder.detail()
    if judged is not None:
        from harness.eval.judge_reliability import gate_arm

        detail["judge"] = judged.pop("detail")
        values.update(judged)
        gate_arm(values, ci, rows, detail["judge"], budget.judge)  # an unreliable judge's metric: withheld
    return Assessment(values, ci, detail)


def judge_arm(rows: list[dict], task: dict, budget: Budget, base_dir: Path | None) -> dict:
    from harness.eval.judge import judge_rows  # urllib and a second model: only when a judge is set

    return judge_rows(rows, budget.judge, task.get("instruction"), base_dir)


def classification_detail(rows, labels: list[str]) -> dict:
    matrix = confusion_matrix(rows, len(labels))
    names = list(labels)
    if matrix[:, -1].sum() == 0 and matrix[-1].sum() == 0:
        matrix = matrix[:-1, :-1]  # no prediction outside the labels: drop the 'other' column
    else:
        names.append("(no label)")
    f1 = per_class_f1(matrix)
    return {
        "per_class_f1": {label: round(float(f1[i]), 6) for i, label in enumerate(labels)},
        "confusion_matrix": {"labels": names, "matrix": matrix.tolist(), "rows": "reference", "columns": "prediction"},
    }


def assess_arm(
    rows: list[dict],
    examples: list[dict],
    task: dict,
    arm,
    *,
    model,
    tokenizer,
    kind: str,
    shots: list[dict],
    general=None,
    domain=None,
    trained: bool,
) -> Assessment:
    """Everything execute needs after prediction: reference perplexity (decoders on generation),
    the metrics with their CIs, and forgetting (decoders, when measured before training)."""

    budget = arm.budget
    if kind == "causal_lm" and task["type"] == "generation":
        add_reference_nll(
            rows,
            examples,
            model,
            tokenizer,
            PromptFormatter(tokenizer, task, shots),
            max_len=budget.max_seq_len,
            batch_size=budget.eval_batch_size,
        )
    assessed = assess(rows, task, budget, base_dir=Path(arm.base_dir), seed=arm.seed)
    # Measured on held-out text before and after training (each: value, CI over passages, detail).
    for name, probe in (("domain_perplexity", domain), ("forgetting", general)):
        if probe is None:
            continue
        value, interval, assessed.detail[name] = probe.after(
            model, tokenizer, trained=trained, resamples=budget.bootstrap_resamples, seed=arm.seed
        )
        assessed.metrics[name] = value
        if interval:
            assessed.ci[name] = interval
    return assessed
