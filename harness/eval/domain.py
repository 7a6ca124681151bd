"""Domain perplexity (decoders): perplexity of held-out domain text (budget.domain_text), before
and after training, to see what continual pretraining bought. The text is cut into passages of
PASSAGE_TOKENS tokens (at most PASSAGES); its value is exp(total NLL / total tokens) after
training, with the base's value in metrics_detail.domain_perplexity and a CI over passages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.eval.forgetting import passage_losses

PASSAGES = 48
PASSAGE_TOKENS = 256
PASSAGE_CHARS_PER_TOKEN = 64  # text read per passage: far more than PASSAGE_TOKENS tokens ever take


def perplexity_of(rows: np.ndarray) -> float:
    return float(np.exp(rows[:, 0].sum() / rows[:, 1].sum()))


@dataclass
class DomainPerplexity:
    source: str
    passages: list[str]
    before: np.ndarray

    @classmethod
    def measure_before(cls, model, tokenizer, *, kind: str, budget, base_dir: Path | None):
        from harness.data.corpus import passages as first_passages

        source = budget.domain_text
        if kind != "causal_lm" or not source:
            return None
        cut = PASSAGE_TOKENS * PASSAGE_CHARS_PER_TOKEN
        passages = first_passages(source, base_dir, key="budget.domain_text", limit=PASSAGES, max_chars=cut)
        return cls(source, passages, passage_losses(model, tokenizer, passages, PASSAGE_TOKENS))

    def after(self, model, tokenizer, *, trained: bool, resamples: int, seed: int) -> tuple[float, list | None, dict]:
        from harness.eval.stats import bootstrap_ci

        after = passage_losses(model, tokenizer, self.passages, PASSAGE_TOKENS) if trained else self.before
        value = perplexity_of(after)
        detail = {
            "text": self.source,
            "passages": len(self.passages),
            "tokens": int(after[:, 1].sum()),
            "max_tokens_per_passage": PASSAGE_TOKENS,
            "before": round(perplexity_of(self.before), 6),
            "after": round(value, 6),
            "measured_after": trained,
        }
        return round(value, 6), bootstrap_ci(after, perplexity_of, resamples=resamples, seed=seed), detail
