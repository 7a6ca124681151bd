"""Causal-LM supervised fine-tuning: loss on the completion tokens only (prompt masked)."""

from __future__ import annotations

import torch

from harness.data.formatting import PromptFormatter, target_of
from harness.objectives import loop

IGNORE = -100


def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[dict, int]:
    """Right-padded input_ids/attention_mask/labels; labels mask prompt and padding."""
    width = max(len(p) + len(c) for p, c in rows)
    ids, mask, labels = [], [], []
    for prompt, completion in rows:
        seq = prompt + completion
        pad = width - len(seq)
        ids.append(seq + [pad_id] * pad)
        mask.append([1] * len(seq) + [0] * pad)
        labels.append([IGNORE] * len(prompt) + completion + [IGNORE] * pad)
    trained = sum(len(c) for _, c in rows)
    tensors = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}
    return tensors, trained


class SFTObjective:
    def train(self, model, tokenizer, train: list[dict], task: dict, budget: dict, lr: float, on_step=None):
        formatter = PromptFormatter(tokenizer, task)
        max_len = budget["max_seq_len"]
        cache: dict[int, tuple[list[int], list[int]]] = {}

        def encoded(i: int):
            if i not in cache:
                cache[i] = formatter.encode(train[i], target_of(train[i], task), max_len)
            return cache[i]

        def make_batch(indices):
            return pad_batch([encoded(i) for i in indices], tokenizer.pad_token_id)

        return loop.train(model, n_examples=len(train), ids=[e["id"] for e in train], make_batch=make_batch,
                          budget=budget, lr=lr, on_step=on_step)
