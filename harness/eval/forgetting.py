"""Forgetting (what peft's method_comparison calls it): the loss of a decoder on a general
held-out text before and after training. A method that wins the task by damaging the base
shows it here.

The general text, by default: the first 32 articles of the validation split of the packaged
BBC News data (`prepared:topics`, 2004-2005 news in five topics: broad, everyday English that
no packaged task trains on; the topics task trains on its train split only), each cut to its
first 128 tokens. `budget.forgetting_text` names another prepared dataset or a .txt (passages
separated by blank lines) / .jsonl (a "text" field) file; null turns it off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.config.schema import Budget
from harness.data import prepared
from harness.errors import HarnessError
from harness.eval.likelihood import IGNORE, target_logprobs
from harness.eval.stats import bootstrap_ci

DEFAULT_TEXT = "prepared:topics"
PASSAGES = 32
PASSAGE_TOKENS = 128
BATCH = 8


def load_passages(source: str, base_dir: Path | None = None, limit: int = PASSAGES) -> list[str]:
    if source.startswith("prepared:"):
        path = prepared.prepared_dir(source.split(":", 1)[1]) / "validation.jsonl"
    else:
        path = Path(source) if Path(source).is_absolute() or base_dir is None else Path(base_dir) / source
    if not path.is_file():
        raise HarnessError(
            f"forgetting text '{source}' not found",
            key="budget.forgetting_text",
            fix="name a prepared dataset (prepared:topics), a .txt or .jsonl file, or null",
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        passages = [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    else:
        passages = [p.strip() for p in text.split("\n\n") if p.strip()]
    return passages[:limit]


def passage_losses(model, tokenizer, passages: list[str], max_tokens: int = PASSAGE_TOKENS) -> np.ndarray:
    """(summed NLL, tokens) per passage: every token but the first is a target."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    with torch.inference_mode():
        for i in range(0, len(passages), BATCH):
            encoded = [
                tokenizer(p, truncation=True, max_length=max_tokens)["input_ids"] for p in passages[i : i + BATCH]
            ]
            width = max(map(len, encoded))
            ids = torch.tensor([e + [pad] * (width - len(e)) for e in encoded], device=device)
            mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded], device=device)
            labels = ids.masked_fill(mask == 0, IGNORE)
            sums, counts = target_logprobs(model, ids, mask, labels)
            rows += [[-s, c] for s, c in zip(sums.tolist(), counts.tolist())]
    return np.array(rows, dtype=float).reshape(-1, 2)


def mean_loss(rows: np.ndarray) -> float:
    return float(rows[:, 0].sum() / rows[:, 1].sum())


@dataclass
class Forgetting:
    source: str
    passages: list[str]
    before: np.ndarray

    trained: bool = True
    before_reused: bool = False  # taken from the per-machine cache of base measurements
    after_rows: np.ndarray | None = None  # measured early (measure_after), before any cast for evaluation

    @classmethod
    def measure_before(
        cls,
        model,
        tokenizer,
        *,
        kind: str,
        budget: Budget,
        base_dir: Path | None,
        trained: bool = True,
        model_identity: dict | None = None,
    ):
        """The base model's losses; None for encoders or when the budget turns it off. An arm
        that trains nothing keeps the base's weights: its forgetting is 0 without measuring.
        With `model_identity` (harness.eval.base_cache.model_identity) the losses are computed
        once per machine for that model and text, and reused by every later arm on it."""
        source = budget.forgetting_text
        if kind != "causal_lm" or not source:
            return None
        if not trained:
            return cls(source, [], np.zeros((0, 2)), trained=False)
        passages = load_passages(source, base_dir)
        if model_identity is None:
            return cls(source, passages, passage_losses(model, tokenizer, passages))
        from harness.eval import base_cache

        key = {"model": model_identity, "text": base_cache.text_fingerprint(passages), "max_tokens": PASSAGE_TOKENS}
        rows, reused = base_cache.cached(
            "forgetting_before", key, lambda: passage_losses(model, tokenizer, passages).tolist()
        )
        return cls(source, passages, np.array(rows, dtype=float).reshape(-1, 2), before_reused=reused)

    def measure_after(self, model, tokenizer) -> None:
        """The trained model's losses now, in the precision it trained in (evaluation may cast it)."""
        if self.trained:
            self.after_rows = passage_losses(model, tokenizer, self.passages)

    def after(self, model, tokenizer, *, trained: bool, resamples: int, seed: int) -> tuple[float, list | None, dict]:
        """(forgetting, its 95% bootstrap CI over passages, detail)."""

        if not (trained and self.trained):
            return 0.0, None, {"text": self.source, "measured": False, "reason": "nothing trained: the base's weights"}
        after = self.after_rows if self.after_rows is not None else passage_losses(model, tokenizer, self.passages)
        # Per-passage rows (nll before, nll after, tokens): the CI resamples passages.
        rows = np.column_stack([self.before[:, 0], after[:, 0], self.before[:, 1]])
        value = mean_loss(after) - mean_loss(self.before)
        ci = bootstrap_ci(rows, forgetting_from_rows, resamples=resamples, seed=seed)
        detail = {
            "text": self.source,
            "measured": True,
            "passages": len(self.passages),
            "tokens": int(self.before[:, 1].sum()),
            "max_tokens_per_passage": PASSAGE_TOKENS,
            "loss_before": round(mean_loss(self.before), 6),
            "loss_after": round(mean_loss(after), 6),
            "unit": "nats/token",
            "loss_before_reused": self.before_reused,
        }
        return round(value, 6), ci, detail


def forgetting_from_rows(rows: np.ndarray) -> float:
    tokens = rows[:, 2].sum()
    return float((rows[:, 1].sum() - rows[:, 0].sum()) / tokens)
