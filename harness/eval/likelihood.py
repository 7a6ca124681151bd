"""Log-likelihood of target tokens under a causal LM: the one shifted-logits computation that
label scoring, perplexity of the references and forgetting all use."""

from __future__ import annotations

import torch

IGNORE = -100


def _prompt_learning(model) -> bool:
    """peft prompt/prefix tuning prepend virtual positions, which shift any position index."""
    configs = getattr(model, "peft_config", None) or {}
    return any(getattr(c, "is_prompt_learning", False) for c in configs.values())


def target_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability, number of target tokens) per row.

    Targets are the positions of `labels` that are not IGNORE; token t is predicted by the
    logits at position t-1, so logits and labels are shifted by one before they meet. Only the
    positions that predict a target get the vocabulary projection and softmax (transformers'
    `logits_to_keep`): on a 49k vocabulary that is most of the memory traffic of label scoring.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE
    needed = mask.any(0).nonzero().squeeze(-1)           # predicting positions (t-1) in use by any row
    if len(needed) and not _prompt_learning(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=needed).logits
        if logits.shape[1] == len(needed):               # a model that ignores logits_to_keep returns all
            logprobs = logits.float().log_softmax(-1)
            keep_targets, keep_mask = targets[:, needed], mask[:, needed]
            picked = logprobs.gather(-1, keep_targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            return (picked * keep_mask).sum(-1), keep_mask.sum(-1)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    # Prompt-learning wrappers prepend virtual positions to the output: the last
    # input_ids.shape[1] positions are the ones that belong to the real tokens.
    logits = logits[:, -input_ids.shape[1]:].float()
    logprobs = logits[:, :-1].log_softmax(-1)
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1), mask.sum(-1)
