"""Log-likelihood of target tokens under a causal LM: the one shifted-logits computation that
label scoring, perplexity of the references and forgetting all use."""

from __future__ import annotations

import torch

from harness.data.encoding import (
    IGNORE,  # noqa: E402 - the one ignore id
    left_padded,
    pad_batch,
)


def _prompt_learning(model) -> bool:
    """peft prompt/prefix tuning prepend virtual positions, which shift any position index."""
    configs = getattr(model, "peft_config", None) or {}
    return any(getattr(c, "is_prompt_learning", False) for c in configs.values())


def shifted_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-softmax over the vocabulary, targets, target mask) at the positions that predict a
    target token of some row.

    Targets are the positions of `labels` that are not IGNORE; token t is predicted by the
    logits at position t-1, so logits and labels are shifted by one before they meet. Only the
    positions that predict a target get the vocabulary projection and softmax (transformers'
    `logits_to_keep`): on a 49k vocabulary that is most of the memory traffic of label scoring.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE
    needed = mask.any(0).nonzero().squeeze(-1)  # predicting positions (t-1) in use by any row
    if len(needed) and not _prompt_learning(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=needed).logits
        if logits.shape[1] == len(needed):  # a model that ignores logits_to_keep returns all
            return logits.float().log_softmax(-1), targets[:, needed], mask[:, needed]
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    # Prompt-learning wrappers prepend virtual positions to the output: the last
    # input_ids.shape[1] positions are the ones that belong to the real tokens.
    logits = logits[:, -input_ids.shape[1] :].float()
    return logits[:, :-1].log_softmax(-1), targets, mask


def target_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability, number of target tokens) per row (see shifted_logprobs)."""
    logprobs, targets, mask = shifted_logprobs(model, input_ids, attention_mask, labels)
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1), mask.sum(-1)


class SharedPrefix:
    """The KV cache of the tokens every prompt so far has begun with (the chat template's system
    turn with the instruction, the few-shot examples): computed once, reused by every batch.

    The prefix is the longest common start of the prompts seen, so it settles after the first
    batches; each prompt keeps at least one token of its own, whose logits predict its answer.
    """

    MIN_TOKENS = 8  # shorter shared starts are not worth a cache

    def __init__(self, model):
        self.model, self.ids, self.cache = model, None, None

    def _common_length(self, prompts: list[list[int]]) -> int:
        ref = self.ids if self.ids is not None else prompts[0]
        n = min(len(ref), min(map(len, prompts)) - 1)
        for p in prompts:
            k = 0
            while k < n and p[k] == ref[k]:
                k += 1
            n = k
        return n

    def for_batch(self, prompts: list[list[int]]):
        """(shared length, a fresh cache of it repeated for the batch) or (0, an empty cache)."""
        import copy

        from transformers import DynamicCache

        n = self._common_length(prompts)
        if n < self.MIN_TOKENS:
            return 0, DynamicCache()
        if self.ids is None or len(self.ids) != n:
            self.ids, self.cache = prompts[0][:n], DynamicCache()
            ids = torch.tensor([self.ids], device=next(self.model.parameters()).device)
            self.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(len(prompts))
        return n, cache


def completion_logprobs(
    model, prompts: list[list[int]], completions: list[list[int]], pad_id: int, shared: SharedPrefix | None = None
) -> torch.Tensor:
    """Summed log-probability of every completion after every prompt: a (prompts x completions)
    tensor, computing each prompt once.

    Label scoring asks the same question of one prompt for each label. Running prompt+label per
    label repeats the prompt's forward pass (nearly all the tokens); here the prompts run once
    with the KV cache (after the prefix they all share, when `shared` holds one), the cache is
    repeated per completion, and only the completion tokens run again. Prompts are left-padded
    after the shared prefix, so every prompt's next-token logits sit at the last position;
    explicit position ids give each token its position in the unpadded text.
    Prompt-learning wrappers (virtual tokens of their own in the cache) take the plain path.
    """
    if _prompt_learning(model):
        return _completion_logprobs_unshared(model, prompts, completions, pad_id)
    from transformers import DynamicCache

    device = next(model.parameters()).device
    n, k = len(prompts), len(completions)
    start, cache = shared.for_batch(prompts) if shared else (0, DynamicCache())
    own = [p[start:] for p in prompts]
    ids, own_mask = left_padded(own, pad_id, device)
    mask = torch.cat([torch.ones(n, start, dtype=own_mask.dtype, device=device), own_mask], -1)
    positions = start + (own_mask.cumsum(-1) - 1).clamp(min=0)
    first = (
        model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        .logits[:, -1]
        .float()
        .log_softmax(-1)
    )  # (n, vocab)
    total = first[:, torch.tensor([c[0] for c in completions], device=device)]  # (n, k)
    longest = max(map(len, completions))
    if longest == 1:
        return total
    # Every later completion token: one forward over the (prompt, completion) pairs, the cache
    # repeated k times (row i*k + j is prompt i with completion j).
    cache.batch_repeat_interleave(k)
    comp = torch.tensor([c + [pad_id] * (longest - len(c)) for c in completions], device=device).repeat(n, 1)
    comp_mask = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in completions], device=device).repeat(n, 1)
    ends = (start + own_mask.sum(-1)).repeat_interleave(k).unsqueeze(-1)
    second = (
        model(
            input_ids=comp[:, :-1],
            attention_mask=torch.cat([mask.repeat_interleave(k, 0), comp_mask[:, :-1]], -1),
            position_ids=ends + torch.arange(longest - 1, device=device),
            past_key_values=cache,
            use_cache=True,
        )
        .logits.float()
        .log_softmax(-1)
    )  # (n*k, longest-1, vocab)
    later = second.gather(-1, comp[:, 1:].unsqueeze(-1)).squeeze(-1) * comp_mask[:, 1:]
    return total + later.sum(-1).view(n, k)


def _completion_logprobs_unshared(model, prompts, completions, pad_id) -> torch.Tensor:
    """prompt+completion per pair in one right-padded batch (for models that cannot share a cache).
    One-token completions (a label alone) need only each prompt's next-token distribution: one
    sequence per prompt, whichever completion it carries, read at the completion's position."""

    device = next(model.parameters()).device
    if all(len(c) == 1 for c in completions):
        tensors, _ = pad_batch([(p, completions[0]) for p in prompts], pad_id)
        logprobs, _, mask = shifted_logprobs(
            model, *(tensors[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        )
        at_completion = logprobs[torch.arange(len(prompts), device=device), mask.int().argmax(-1)]  # (n, vocab)
        return at_completion[:, torch.tensor([c[0] for c in completions], device=device)]
    tensors, _ = pad_batch([(p, c) for p in prompts for c in completions], pad_id)
    sums, _ = target_logprobs(model, *(tensors[k].to(device) for k in ("input_ids", "attention_mask", "labels")))
    return sums.view(len(prompts), len(completions))
