"""Entity-level scores of BIO tag sequences with seqeval (conlleval rules: an I- tag after O
starts an entity). Per-sentence counts (correct, predicted, gold entities) make micro precision,
recall and F1 reducible from any subset of sentences, which the bootstrap CIs need."""

from __future__ import annotations

import numpy as np


def entity_counts(pred: list[str], gold: list[str]) -> tuple[int, int, int]:
    from seqeval.metrics.sequence_labeling import get_entities

    predicted, reference = set(get_entities(list(pred))), set(get_entities(list(gold)))
    return len(predicted & reference), len(predicted), len(reference)


def entity_rows(items) -> np.ndarray:
    return np.array([entity_counts(p, r) for p, r in zip(items.preds, items.refs)], dtype=float).reshape(-1, 3)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def precision_from_rows(rows: np.ndarray) -> float:
    return _ratio(rows[:, 0].sum(), rows[:, 1].sum())


def recall_from_rows(rows: np.ndarray) -> float:
    return _ratio(rows[:, 0].sum(), rows[:, 2].sum())


def f1_from_rows(rows: np.ndarray) -> float:
    return _ratio(2 * rows[:, 0].sum(), rows[:, 1].sum() + rows[:, 2].sum())


def seqeval_f1(preds: list[list[str]], refs: list[list[str]]) -> float:
    from seqeval.metrics import f1_score

    return float(f1_score([list(r) for r in refs], [list(p) for p in preds], zero_division=0))


def tag_accuracy(pred: list[str], gold: list[str]) -> float:
    """Share of a sentence's words whose tag is right (a per-item score for paired tests)."""
    return sum(p == g for p, g in zip(pred, gold)) / max(len(gold), 1)


def per_type_f1(preds: list[list[str]], refs: list[list[str]]) -> dict[str, float]:
    from seqeval.metrics import classification_report

    report = classification_report([list(r) for r in refs], [list(p) for p in preds], output_dict=True, zero_division=0)
    return {name: round(float(v["f1-score"]), 6) for name, v in report.items() if " avg" not in name}
