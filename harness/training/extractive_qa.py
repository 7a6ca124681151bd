"""Extractive question answering with an encoder head: cross-entropy on the answer's start and
end token in the (question, context) pair; an answer cut off by truncation points at [CLS]."""

from __future__ import annotations

import torch

from harness.config.schema import Budget
from harness.data.encoding import answer_span, encode_pairs
from harness.training import loop, register_objective


@register_objective("extractive_qa")
class ExtractiveQAObjective(loop.BatcherObjective):
    def batcher(self, tokenizer, train: list[dict], task: dict, budget: Budget):
        def make_batch(indices):
            examples = [train[i] for i in indices]
            enc = encode_pairs(tokenizer, examples, budget.max_seq_len)
            spans = [
                answer_span(
                    enc.sequence_ids(j),
                    enc["offset_mapping"][j].tolist(),
                    int(e["answer_start"]),
                    int(e["answer_start"]) + len(e["answer"]),
                )
                for j, e in enumerate(examples)
            ]
            batch = {k: v for k, v in enc.items() if k != "offset_mapping"}
            batch["start_positions"] = torch.tensor([s for s, _ in spans])
            batch["end_positions"] = torch.tensor([e for _, e in spans])
            return batch, int(enc["attention_mask"].sum())

        return make_batch
