"""The metric registry (harness.plugins.Registry, like methods and stages). Each metric is declared
once: direction, unit, kind and, for a metric computed from predictions, its per-item statistics,
reduction and paired test; the console table, results.json, the report, MLflow and the gate all
read this declaration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.eval.stats import item_mean
from harness.plugins import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    unit: str
    kind: str  # "quality" or "cost"
    description: str
    task_types: tuple[str, ...] = ()
    # For confidence intervals and paired tests: statistics per test item (n rows) and the
    # reduction that gives the metric's value from any subset of rows (a bootstrap resample).
    item_stats: Callable[["Items"], "np.ndarray | None"] | None = None
    reduce: Callable[["np.ndarray"], float] | None = None
    # How two arms are compared: "mcnemar", or "paired_bootstrap" (which recomputes `reduce` on
    # every resample of items, so corpus metrics such as macro-F1, BLEU and entity F1 get it too).
    paired_test: str | None = None


# Built-ins are declared below, in the order reports list them; a third-party package adds a
# Metric through the `harness.metrics` entry-point group.
METRICS = Registry("metric", "harness.metrics")


def declare(
    name,
    *,
    higher_is_better,
    unit,
    kind,
    description,
    task_types=(),
    item_stats=None,
    reduce=None,
    paired_test: str | None = None,
) -> Metric:
    """Register one metric, declared once: direction, unit, kind and, for a metric computed from
    predictions, its per-item statistics and reduction (a mean over items unless told) and its
    paired test. Declaring a name twice is a ValueError."""
    metric = Metric(
        name,
        higher_is_better,
        unit,
        kind,
        description,
        tuple(task_types),
        item_stats=item_stats,
        reduce=reduce or (item_mean if item_stats else None),
        paired_test=paired_test,
    )
    METRICS.register(name)(metric)
    return metric


def quality_metrics(task_type: str) -> list[Metric]:
    return [m for m in METRICS.values() if m.kind == "quality" and task_type in m.task_types]


def primary_metric(task_type: str) -> str:
    """The task type's primary metric (harness.tasks): the headline of comparisons and reports."""
    from harness.tasks import task_type as row

    return row(task_type).primary_metric


# ------------------------------------------------------------------ per-item statistics
# Every quality metric as per-item rows plus a reduction, which is what the bootstrap confidence
# intervals (harness.eval.stats) and the pairwise comparisons need.


@dataclass
class Items:
    """Everything a metric may read about the scored test items of one arm."""

    preds: list[str]
    refs: list[str]
    labels: list[str] | None = None  # classification labels, in task order
    rows: list[dict] = field(default_factory=list)  # prediction rows with their extras
    bertscore: Callable | None = None  # (preds, refs) -> per-item F1, or None
    embedding: Callable | None = None  # (preds, refs) -> per-item cosine, or None


def per_item(fn: Callable[[str, str], float]) -> Callable[[Items], np.ndarray]:
    """Item statistics of a metric that is the mean of a per-item score."""
    return lambda items: np.array([fn(p, r) for p, r in zip(items.preds, items.refs)], dtype=float).reshape(-1, 1)


def _rouge_items(kind: str):
    def stats(items: Items) -> np.ndarray:
        from harness.eval.text_metrics import rouge

        return np.array([rouge(kind, p, r) for p, r in zip(items.preds, items.refs)], dtype=float).reshape(-1, 1)

    return stats


def _confusion_items(items: Items) -> np.ndarray:
    from harness.eval.text_metrics import confusion_rows

    return confusion_rows(items.preds, items.refs, items.labels or sorted(set(items.refs)))


def _macro_f1_reduce(rows: np.ndarray) -> float:
    from harness.eval.text_metrics import macro_f1_from_rows

    # Rows hold label indices with "other" = the largest index in use or above; the count of
    # classes only sizes the matrix, and unseen classes are left out of the mean anyway.
    return macro_f1_from_rows(rows, int(rows.max()) if len(rows) else 0)


def _same(p: str, r: str) -> float:
    return float(p == r)


def _exact(p: str, r: str) -> float:
    return float(p.strip().lower() == r.strip().lower())


def _token_f1(p: str, r: str) -> float:
    from harness.eval.text_metrics import token_f1

    return token_f1(p, r)


def _bleu_items(items: Items) -> np.ndarray:
    from harness.eval.text_metrics import bleu_stats

    return bleu_stats(items.preds, items.refs)


def _bleu_reduce(rows: np.ndarray) -> float:
    from harness.eval.text_metrics import bleu_from_stats

    return bleu_from_stats(rows)


def _bertscore_items(items: Items) -> np.ndarray | None:
    if items.bertscore is None:
        return None
    return np.asarray(items.bertscore(items.preds, items.refs), dtype=float).reshape(-1, 1)


def _embedding_items(items: Items) -> np.ndarray | None:
    if items.embedding is None:
        return None
    return np.asarray(items.embedding(items.preds, items.refs), dtype=float).reshape(-1, 1)


def _judge_items(mode: str):
    """The judge's per-item score (harness.eval.judge); NaN where the judge failed or its reply did
    not parse, so the mean, the CI and the paired tests use the judged items only."""

    def stats(items: Items) -> np.ndarray | None:
        judged = [r.get("judge") for r in items.rows]
        if not judged or any(j is None or j["mode"] != mode for j in judged) or all(j["score"] is None for j in judged):
            return None
        return np.array([np.nan if j["score"] is None else j["score"] for j in judged], dtype=float).reshape(-1, 1)

    return stats


def _judged_mean(rows: np.ndarray) -> float:
    values = rows[:, 0][~np.isnan(rows[:, 0])]
    return float(values.mean()) if len(values) else float("nan")


def _reference_nll_items(items: Items) -> np.ndarray | None:
    """(summed negative log-likelihood, tokens) of each reference, when the arm computed them."""
    if not items.rows or "reference_nll" not in items.rows[0]:
        return None
    return np.array([[r["reference_nll"], r["reference_tokens"]] for r in items.rows], dtype=float)


def _perplexity_reduce(rows: np.ndarray) -> float:
    # Token-weighted, like a corpus perplexity: exp(total NLL / total tokens).
    tokens = rows[:, 1].sum()
    return float(np.exp(rows[:, 0].sum() / tokens)) if tokens else float("nan")


# ------------------------------------------------------------------ the built-in metrics

CLS, GEN, QA = ("classification",), ("generation",), ("extractive_qa",)
declare(
    "accuracy",
    higher_is_better=True,
    unit="fraction",
    kind="quality",
    task_types=CLS,
    description="share of test items whose predicted label is the reference",
    item_stats=per_item(_same),
    paired_test="mcnemar",
)
declare(
    "macro_f1",
    higher_is_better=True,
    unit="fraction",
    kind="quality",
    task_types=CLS,
    description="F1 averaged over classes with equal weight",
    item_stats=_confusion_items,
    reduce=_macro_f1_reduce,
    paired_test="paired_bootstrap",
)
declare(
    "rouge1",
    higher_is_better=True,
    unit="F-measure",
    kind="quality",
    task_types=GEN,
    description="unigram overlap with the reference (rouge-score, stemmed)",
    item_stats=_rouge_items("rouge1"),
    paired_test="paired_bootstrap",
)
declare(
    "rouge2",
    higher_is_better=True,
    unit="F-measure",
    kind="quality",
    task_types=GEN,
    description="bigram overlap with the reference (rouge-score, stemmed)",
    item_stats=_rouge_items("rouge2"),
    paired_test="paired_bootstrap",
)
declare(
    "rougeL",
    higher_is_better=True,
    unit="F-measure",
    kind="quality",
    task_types=GEN,
    description="longest common subsequence with the reference (rouge-score, stemmed)",
    item_stats=_rouge_items("rougeL"),
    paired_test="paired_bootstrap",
)
declare(
    "exact_match",
    higher_is_better=True,
    unit="fraction",
    kind="quality",
    task_types=GEN + QA,
    description="prediction equals the reference after trimming and lower-casing",
    item_stats=per_item(_exact),
    paired_test="mcnemar",
)

for _name, _hib, _unit, _desc in [
    (
        "peak_memory_mb",
        False,
        "MiB",
        "peak resident memory of the arm's process (CPU) or peak CUDA memory allocated minus the start",
    ),
    ("peak_cuda_reserved_mb", False, "MiB", "peak CUDA memory reserved by the allocator minus the start"),
    ("load_seconds", False, "s", "time to load the base model and wrap it"),
    ("train_seconds", False, "s", "wall time of the training loop (no evaluation inside)"),
    ("train_tokens_per_s", True, "tokens/s", "trained-on tokens per second of training"),
    ("eval_examples_per_s", True, "examples/s", "batched evaluation throughput"),
    ("latency_p50_ms", False, "ms", "median latency of one test item predicted alone (batch 1)"),
    ("latency_p95_ms", False, "ms", "95th percentile latency of one test item predicted alone (batch 1)"),
    ("trainable_params", False, "parameters", "parameters the method trains"),
    ("total_params", False, "parameters", "all parameters of the model as evaluated"),
    ("trainable_pct", False, "%", "trainable parameters as a share of all"),
]:
    declare(_name, higher_is_better=_hib, unit=_unit, kind="cost", description=_desc)


declare(
    "token_f1",
    higher_is_better=True,
    unit="F-measure",
    kind="quality",
    task_types=GEN + QA,
    description="F1 of the bag of normalised tokens (SQuAD style: lower case, no punctuation or articles)",
    item_stats=per_item(_token_f1),
    paired_test="paired_bootstrap",
)
declare(
    "bleu",
    higher_is_better=True,
    unit="BLEU (0-100)",
    kind="quality",
    task_types=GEN,
    description="corpus BLEU (sacrebleu defaults: 13a tokens, exponential smoothing, 4-grams)",
    item_stats=_bleu_items,
    reduce=_bleu_reduce,
    paired_test="paired_bootstrap",
)
declare(
    "bertscore_f1",
    higher_is_better=True,
    unit="F-measure (cosine)",
    kind="quality",
    task_types=GEN,
    description="BERTScore F1 against the reference; the scorer model and layer are in metrics_detail",
    item_stats=_bertscore_items,
    paired_test="paired_bootstrap",
)
declare(
    "embedding_cosine",
    higher_is_better=True,
    unit="cosine",
    kind="quality",
    task_types=GEN,
    description=(
        "cosine of mean-pooled sentence embeddings of prediction and reference; the encoder is in metrics_detail"
    ),
    item_stats=_embedding_items,
    paired_test="paired_bootstrap",
)
declare(
    "judge_score",
    higher_is_better=True,
    unit="grade (1-10)",
    kind="quality",
    task_types=GEN,
    description="LLM judge's grade of the answer on the rubric (judged items only; the judge is in metrics_detail)",
    item_stats=_judge_items("grade"),
    reduce=_judged_mean,
    paired_test="paired_bootstrap",
)
declare(
    "judge_win_rate",
    higher_is_better=True,
    unit="fraction",
    kind="quality",
    task_types=GEN,
    description="LLM judge: answer beats the reference (1), tie or contradicting itself across orders (0.5), loses (0)",
    item_stats=_judge_items("pairwise_reference"),
    reduce=_judged_mean,
    paired_test="paired_bootstrap",
)
declare(
    "judge_pairwise_strength",
    higher_is_better=True,
    unit="log-strength (Bradley-Terry)",
    kind="quality",
    task_types=GEN,
    description="LLM judge, arm against arm: Bradley-Terry log-strength among the task's arms (mean 0; +0.69: "
    "twice the odds of winning), CI from resampling items; run-level (harness.eval.judge_pairs)",
)
declare(
    "perplexity",
    higher_is_better=False,
    unit="perplexity (exp nats/token)",
    kind="quality",
    task_types=GEN,
    description="perplexity of the reference completions given the prompt (decoders only)",
    item_stats=_reference_nll_items,
    reduce=_perplexity_reduce,
    paired_test="paired_bootstrap",
)

# Not a function of predictions: measured on a general text before and after training, on
# decoders (harness.eval.forgetting); no task_types, so score_items leaves it alone.
declare(
    "domain_perplexity",
    higher_is_better=False,
    unit="perplexity (exp nats/token)",
    kind="quality",
    description="perplexity of held-out domain text (budget.domain_text) after training; the base's in metrics_detail",
)
declare(
    "forgetting",
    higher_is_better=False,
    unit="nats/token",
    kind="quality",
    description="loss on a general held-out text after training minus before (> 0: the base got worse)",
)
for _name, _hib, _unit, _desc in [
    ("generation_tokens_per_s", True, "tokens/s", "generated tokens per second of batched greedy generation"),
    ("saved_mb", False, "MiB", "size of what the method saves: the adapter folder, or the trainable parameters' bytes"),
]:
    declare(_name, higher_is_better=_hib, unit=_unit, kind="cost", description=_desc)


# Token classification (NER): entity-level micro scores (seqeval), then a per-sentence tag accuracy.
def _declare_ner() -> None:
    from harness.eval import ner_metrics as ner

    ner_type = ("token_classification",)
    for name, reduce, desc in [
        (
            "entity_f1",
            ner.f1_from_rows,
            "entity-level micro F1 (seqeval; an entity counts only with its exact span and type)",
        ),
        ("entity_precision", ner.precision_from_rows, "share of predicted entities that are right (span and type)"),
        ("entity_recall", ner.recall_from_rows, "share of reference entities found (span and type)"),
    ]:
        declare(
            name,
            higher_is_better=True,
            unit="fraction",
            kind="quality",
            task_types=ner_type,
            description=desc,
            item_stats=ner.entity_rows,
            reduce=reduce,
            paired_test="paired_bootstrap",
        )
    declare(
        "tag_accuracy",
        higher_is_better=True,
        unit="fraction",
        kind="quality",
        task_types=ner_type,
        description="share of words with the right BIO tag, averaged over sentences",
        item_stats=per_item(ner.tag_accuracy),
        paired_test="paired_bootstrap",
    )


_declare_ner()


def value(name: str, preds: list, refs: list, **extra) -> float:
    """One metric over predictions and references: the same per-item statistics and reduction
    that every run, bootstrap and paired test uses (there is no second way to compute it)."""
    metric = METRICS[name]
    return float(metric.reduce(metric.item_stats(Items(preds, refs, **extra))))


def score_items(task_type: str, items: Items) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every quality metric of the task type that can be computed on these items:
    (values, per-item statistics by metric name)."""
    values, stats = {}, {}
    for metric in quality_metrics(task_type):
        if metric.item_stats is None:
            continue
        rows = metric.item_stats(items)
        if rows is None or len(rows) == 0:
            continue
        stats[metric.name] = rows
        values[metric.name] = round(metric.reduce(rows), 6)
    return values, stats


def per_item_score(metric: Metric) -> bool:
    """A metric that is the mean of one score per item: that score is stored per prediction
    (`scores` in predictions.jsonl); corpus metrics are recomputed from the predictions instead."""
    return metric.paired_test is not None and metric.reduce in (item_mean, _judged_mean)


def describe() -> dict[str, dict]:
    """Direction, unit and kind of every metric, for results.json readers."""
    return {
        m.name: {"higher_is_better": m.higher_is_better, "unit": m.unit, "kind": m.kind, "description": m.description}
        for m in METRICS.values()
    }


# Preference stages (harness.stages, harness.eval.preference_metrics): held-out pairs, GRPO/RFT samples, reward models.
# No task_types: measured by the stage runner, not computed from predictions by score_items.
for _name, _hib, _unit, _desc in [
    (
        "preference_accuracy",
        True,
        "fraction",
        "held-out pairs where the chosen completion gets the higher length-normalised log-prob",
    ),
    (
        "reward_accuracy",
        True,
        "fraction",
        "held-out pairs with a positive DPO implicit reward margin against the model before preference training",
    ),
    (
        "reward_margin",
        True,
        "nats",
        "mean DPO implicit reward margin (beta 1) on held-out pairs against the model before preference training",
    ),
    (
        "kl_to_reference",
        False,
        "nats/token",
        "mean per-token KL(policy || model before preference training) on held-out chosen completions",
    ),
    ("grpo_mean_reward", True, "reward", "mean reward of the completions GRPO sampled in training"),
    (
        "reward_model_accuracy",
        True,
        "fraction",
        "reward_model stage: held-out pairs its reward model scores chosen above rejected (bootstrap CI)",
    ),
    ("reward_model_margin", True, "reward", "reward_model stage: mean reward(chosen) - reward(rejected), held out"),
    ("rft_kept_fraction", True, "fraction", "rft stage: prompts whose best sampled completion reached the threshold"),
    ("rft_mean_reward", True, "reward", "rft stage: mean reward of all the completions it sampled"),
    (
        "judge_position_consistency",
        True,
        "fraction",
        "pairwise judge: share of judged items with the same verdict in both answer orders",
    ),
]:
    declare(_name, higher_is_better=_hib, unit=_unit, kind="quality", description=_desc)

for _name, _unit, _desc in [
    ("judge_seconds", "s", "wall time the LLM judge took for this arm (0 for cached replies)"),
    ("judge_tokens", "tokens", "tokens the judge used (prompt + reply, as the endpoint reports them; 0 when cached)"),
    ("judge_failed_items", "items", "items the judge could not score: HTTP error, timeout or unparseable reply"),
]:
    declare(_name, higher_is_better=False, unit=_unit, kind="cost", description=_desc)
