"""Token classification (NER) with an encoder head: cross-entropy per word on its first
sub-token; later sub-tokens, special tokens and padding are ignored (-100)."""

from __future__ import annotations

import torch

from harness.config.schema import Budget
from harness.data.encoding import IGNORE, align_labels, encode_words
from harness.training import loop, register_objective


@register_objective("token_classification")
class TokenClassificationObjective(loop.BatcherObjective):
    @staticmethod
    def loss_items(tensors: dict) -> int:
        """The head's loss averages over labelled positions (first sub-tokens), not examples."""
        return int((tensors["labels"] != IGNORE).sum())

    def batcher(self, tokenizer, train: list[dict], task: dict, budget: Budget):
        label_id = {label: i for i, label in enumerate(task["labels"])}

        def make_batch(indices):
            enc = encode_words(tokenizer, [train[i]["tokens"] for i in indices], budget.max_seq_len)
            labels = [align_labels(enc.word_ids(j), train[i]["tags"], label_id) for j, i in enumerate(indices)]
            batch = dict(enc)
            batch["labels"] = torch.tensor(labels)
            return batch, int(enc["attention_mask"].sum())

        return make_batch
