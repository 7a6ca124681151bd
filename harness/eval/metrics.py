"""The metric registry. Each metric declares its direction and unit once; the console table,
results.json, the report, MLflow and the gate all read this declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Scorer = Callable[[list[str], list[str]], float]


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    unit: str
    kind: str                      # "quality" or "cost"
    description: str
    task_types: tuple[str, ...] = ()
    compute: Scorer | None = None  # quality metrics: (predictions, references) -> value


METRICS: dict[str, Metric] = {}


def declare(name, *, higher_is_better, unit, kind, description, task_types=(), compute=None) -> Metric:
    if name in METRICS:
        raise ValueError(f"metric '{name}' declared twice")
    METRICS[name] = Metric(name, higher_is_better, unit, kind, description, tuple(task_types), compute)
    return METRICS[name]


def _accuracy(preds, refs):
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(refs, preds))


def _macro_f1(preds, refs):
    from sklearn.metrics import f1_score

    # Labels from the references and predictions both, so a never-predicted class counts as 0 F1.
    return float(f1_score(refs, preds, average="macro", labels=sorted(set(refs) | set(preds)), zero_division=0))


def _rouge(kind: str) -> Scorer:
    def score(preds, refs):
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
        values = [scorer.score(r, p)[kind].fmeasure for p, r in zip(preds, refs)]
        return sum(values) / len(values) if values else 0.0

    return score


def _exact_match(preds, refs):
    return sum(p.strip().lower() == r.strip().lower() for p, r in zip(preds, refs)) / max(len(refs), 1)


CLS, GEN = ("classification",), ("generation",)
declare("accuracy", higher_is_better=True, unit="fraction", kind="quality", task_types=CLS,
        description="share of test items whose predicted label is the reference", compute=_accuracy)
declare("macro_f1", higher_is_better=True, unit="fraction", kind="quality", task_types=CLS,
        description="F1 averaged over classes with equal weight", compute=_macro_f1)
declare("rouge1", higher_is_better=True, unit="F-measure", kind="quality", task_types=GEN,
        description="unigram overlap with the reference (rouge-score, stemmed)", compute=_rouge("rouge1"))
declare("rouge2", higher_is_better=True, unit="F-measure", kind="quality", task_types=GEN,
        description="bigram overlap with the reference (rouge-score, stemmed)", compute=_rouge("rouge2"))
declare("rougeL", higher_is_better=True, unit="F-measure", kind="quality", task_types=GEN,
        description="longest common subsequence with the reference (rouge-score, stemmed)", compute=_rouge("rougeL"))
declare("exact_match", higher_is_better=True, unit="fraction", kind="quality", task_types=GEN,
        description="prediction equals the reference after trimming and lower-casing", compute=_exact_match)

for _name, _hib, _unit, _desc in [
    ("peak_memory_mb", False, "MiB", "peak resident memory of the arm's process (CPU) or peak CUDA memory allocated minus the start"),
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


def quality_metrics(task_type: str) -> list[Metric]:
    return [m for m in METRICS.values() if m.kind == "quality" and task_type in m.task_types]


def score(task_type: str, preds: list[str], refs: list[str]) -> dict[str, float]:
    return {m.name: round(m.compute(preds, refs), 6) for m in quality_metrics(task_type)}


def primary_metric(task_type: str) -> str:
    return quality_metrics(task_type)[0].name
