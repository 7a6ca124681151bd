"""The declared rule by which a decoder picks a label: which tokens of each label are scored and
how their log-probabilities are compared (`tasks.<t>.label_scoring` in the experiment).

- end_of_turn: also score the end-of-turn token after the label (`positive<|im_end|>`). A model
  trained on the task learns to end its turn there; an untrained one may not, and then the extra
  term penalises some labels more than others.
- normalize: compare the summed log-probability (`none`, lm-eval's `acc`), the mean per scored
  token (`tokens`), or the sum divided by the label's length in characters (`chars`, lm-eval's
  `acc_norm`).

The default (end_of_turn false, normalize none) is lm-evaluation-harness's `multiple_choice`
with `acc`: the same label on every item (bench/vs_lm_eval.py checks it), so numbers compare with
published lm-eval results. README ("How decoders pick a label") gives the measurements behind it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

NORMALIZE = ("none", "tokens", "chars")


@dataclass(frozen=True)
class ScoringRule:
    end_of_turn: bool = False
    normalize: str = "none"

    @classmethod
    def of_task(cls, task: dict | None) -> ScoringRule:
        """The rule a task declares (defaults for the rest; tasks without one: the default)."""
        return cls(**((task or {}).get("label_scoring") or {}))

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for the report: 'label + end-of-turn, summed log-prob'."""
        tokens = "label + end-of-turn" if self.end_of_turn else "label only"
        how = {"none": "summed log-prob", "tokens": "mean log-prob per token", "chars": "log-prob per character"}[
            self.normalize
        ]
        return f"{tokens}, {how}" + (" (lm-eval multiple_choice acc)" if self == ScoringRule() else "")

    def compare(self, summed: torch.Tensor, completions: list[list[int]], labels: list[str]) -> torch.Tensor:
        """The scores the argmax is taken over: summed log-probs (prompts x labels) normalised."""
        if self.normalize == "tokens":
            return summed / torch.tensor([len(c) for c in completions], dtype=summed.dtype, device=summed.device)
        if self.normalize == "chars":
            return summed / torch.tensor([len(label) for label in labels], dtype=summed.dtype, device=summed.device)
        return summed


def decides_arm(kind: str, task: dict, has_golden_sets: bool) -> bool:
    """Whether the rule can change an arm's result: a decoder that scores labels on its task,
    or any decoder scored on golden sets (whose label assertions are scored the same way)."""
    if kind != "causal_lm":
        return False
    scores_task = task.get("type") == "classification" and task.get("decoder_eval", "score") == "score"
    return scores_task or has_golden_sets
