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


def completion_logprobs(model, prompts: list[list[int]], completions: list[list[int]],
                        pad_id: int) -> torch.Tensor:
    """Summed log-probability of every completion after every prompt: a (prompts x completions)
    tensor, computing each prompt once.

    Label scoring asks the same question of one prompt for each label. Running prompt+label per
    label repeats the prompt's forward pass (nearly all the tokens); here the prompts run once
    with the KV cache, the cache is repeated per completion, and only the completion tokens run
    again. Prompts are left-padded, so every prompt's next-token logits sit at the last
    position; explicit position ids keep each row's positions those of the unpadded text.
    Prompt-learning wrappers (virtual tokens of their own in the cache) take the plain path.
    """
    from transformers import DynamicCache

    if _prompt_learning(model):
        return _completion_logprobs_unshared(model, prompts, completions, pad_id)
    device = next(model.parameters()).device
    n, k = len(prompts), len(completions)
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    first = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                  use_cache=True, logits_to_keep=1).logits[:, -1].float().log_softmax(-1)       # (n, vocab)
    first_ids = torch.tensor([c[0] for c in completions], device=device)
    total = first[:, first_ids]                                                                 # (n, k)
    longest = max(map(len, completions))
    if longest == 1:
        return total
    # Every later completion token: one forward over the (prompt, completion) pairs, the cache
    # repeated k times (row i*k + j is prompt i with completion j).
    cache.batch_repeat_interleave(k)
    comp = torch.tensor([c + [pad_id] * (longest - len(c)) for c in completions], device=device)
    comp_mask = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in completions], device=device)
    comp_ids, comp_mask = comp.repeat(n, 1), comp_mask.repeat(n, 1)
    lengths = mask.sum(-1).repeat_interleave(k).unsqueeze(-1)
    second = model(input_ids=comp_ids[:, :-1], attention_mask=torch.cat([mask.repeat_interleave(k, 0),
                                                                         comp_mask[:, :-1]], -1),
                   position_ids=lengths + torch.arange(longest - 1, device=device), past_key_values=cache,
                   use_cache=True).logits.float().log_softmax(-1)                          # (n*k, longest-1, vocab)
    later = second.gather(-1, comp_ids[:, 1:].unsqueeze(-1)).squeeze(-1) * comp_mask[:, 1:]
    return total + later.sum(-1).view(n, k)


def _completion_logprobs_unshared(model, prompts, completions, pad_id) -> torch.Tensor:
    """prompt+completion per pair in one right-padded batch (for models that cannot share a cache)."""
    from harness.objectives.sft import pad_batch

    tensors, _ = pad_batch([(p, c) for p in prompts for c in completions], pad_id)
    device = next(model.parameters()).device
    sums, _ = target_logprobs(model, *(tensors[k].to(device) for k in ("input_ids", "attention_mask", "labels")))
    return sums.view(len(prompts), len(completions))
