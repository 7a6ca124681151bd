"""Causal-LM supervised fine-tuning: loss on the completion tokens only (prompt masked)."""

from __future__ import annotations

from harness.config.schema import Budget
from harness.data.encoding import IGNORE, pad_batch
from harness.data.formatting import PromptFormatter, target_of
from harness.training import loop, register_objective


def predicted_tokens(tensors: dict) -> int:
    """What a causal LM's loss averages over: labels after the one-token shift that are not masked."""
    return int((tensors["labels"][:, 1:] != IGNORE).sum())


@register_objective("sft")
class SFTObjective:
    def train(
        self,
        model,
        tokenizer,
        train: list[dict],
        task: dict,
        budget: Budget,
        lr: float,
        on_step=None,
        checkpoint_dir=None,
    ):
        formatter = PromptFormatter(tokenizer, task)
        max_len = budget.max_seq_len
        cache: dict[int, tuple[list[int], list[int]]] = {}

        def encoded(i: int):
            if i not in cache:
                cache[i] = formatter.encode(train[i], target_of(train[i], task), max_len)
            return cache[i]

        def make_batch(indices):
            return pad_batch([encoded(i) for i in indices], tokenizer.pad_token_id)

        return loop.train(
            model,
            n_examples=len(train),
            ids=[e["id"] for e in train],
            make_batch=make_batch,
            budget=budget,
            lr=lr,
            on_step=on_step,
            loss_items=predicted_tokens,
            checkpoint_dir=checkpoint_dir,
        )
