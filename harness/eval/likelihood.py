"""Log-likelihood of target tokens under a causal LM: the one shifted-logits computation that
label scoring, perplexity of the references and forgetting all use."""

from __future__ import annotations

import torch

IGNORE = -100


def target_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability, number of target tokens) per row.

    Targets are the positions of `labels` that are not IGNORE; token t is predicted by the
    logits at position t-1, so logits and labels are shifted by one before they meet.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    # Prompt-learning wrappers (prompt/prefix tuning) prepend virtual positions to the output:
    # the last input_ids.shape[1] positions are the ones that belong to the real tokens.
    logits = logits[:, -input_ids.shape[1]:].float()
    logprobs = logits[:, :-1].log_softmax(-1)
    targets = labels[:, 1:]
    mask = targets != IGNORE
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1), mask.sum(-1)
