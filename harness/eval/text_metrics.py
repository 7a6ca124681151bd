"""Per-item statistics of the text metrics, so a metric can be recomputed on any resample of the
test items (bootstrap) from rows computed once.

Each function returns one row per test item; `metrics.py` pairs it with the reduction that turns
any subset of rows into the metric's value.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


@lru_cache(maxsize=None)
def _rouge_scorer(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def rouge(kind: str, prediction: str, reference: str) -> float:
    """ROUGE F-measure of one prediction (rouge-score, stemmed): the one ROUGE scorer that the
    metrics, the golden-set assertions and the GRPO reward share. kind: rouge1, rouge2, rougeL."""
    return float(_rouge_scorer(kind).score(reference, prediction)[kind].fmeasure)


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the bag of normalised tokens (SQuAD's token-level F1); 1.0 when both are empty."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU()  # sacrebleu's defaults: 13a tokenisation, exponential smoothing, 4-grams


def bleu_stats(predictions: list[str], references: list[str] | list[list[str]]) -> np.ndarray:
    """sacrebleu's sufficient statistics per item (lengths, n-gram matches and totals).

    Summing rows and scoring the sum is exactly sacrebleu's corpus BLEU (its own paired
    bootstrap works this way), so a resample costs a sum, not a re-tokenisation.
    `references` is one string per item or, as in sacrebleu, a list of reference streams.
    """
    streams = [list(references)] if references and isinstance(references[0], str) else [list(r) for r in references]
    return np.asarray(_bleu()._extract_corpus_statistics(list(predictions), streams), dtype=np.int64).reshape(
        len(predictions), -1
    )


def bleu_from_stats(rows: np.ndarray) -> float:
    return float(_bleu()._compute_score_from_stats([int(x) for x in rows.sum(0)]).score)


def confusion_rows(predictions: list[str], references: list[str], labels: list[str]) -> np.ndarray:
    """(reference index, prediction index) per item; a prediction outside the labels (an
    unmatched generation, '') gets the extra index len(labels)."""
    index = {label: i for i, label in enumerate(labels)}
    other = len(labels)
    return np.array(
        [[index.get(r, other), index.get(p, other)] for p, r in zip(predictions, references)], dtype=np.int64
    ).reshape(-1, 2)


def confusion_matrix(rows: np.ndarray, n_classes: int) -> np.ndarray:
    """matrix[reference][prediction] counts over the classes plus the 'other' column/row."""
    size = n_classes + 1
    return np.bincount(rows[:, 0] * size + rows[:, 1], minlength=size * size).reshape(size, size)


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """F1 of every class of a confusion matrix (0 when a class is neither predicted nor present)."""
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    denominator = predicted + actual
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def macro_f1_from_rows(rows: np.ndarray, n_classes: int) -> float:
    """Macro F1 like scikit-learn's with labels = those seen in references or predictions."""
    matrix = confusion_matrix(rows, n_classes)
    seen = (matrix.sum(0) + matrix.sum(1)) > 0
    f1 = per_class_f1(matrix)
    return float(f1[seen].mean()) if seen.any() else 0.0
