"""Sequence classification with a head (encoders): cross-entropy on the label id."""

from __future__ import annotations

import torch

from harness.config.schema import Budget
from harness.data.encoding import encode_texts
from harness.training import loop, register_objective


@register_objective("classification")
class ClassificationObjective(loop.BatcherObjective):
    def batcher(self, tokenizer, train: list[dict], task: dict, budget: Budget):
        label_id = {label: i for i, label in enumerate(task["labels"])}

        def make_batch(indices):
            batch = encode_texts(tokenizer, [train[i]["text"] for i in indices], budget.max_seq_len)
            tokens = int(batch["attention_mask"].sum())
            batch = dict(batch)
            batch["labels"] = torch.tensor([label_id[train[i]["label"]] for i in indices])
            return batch, tokens

        return make_batch
