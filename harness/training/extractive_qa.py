"""Extractive question answering with an encoder head: cross-entropy on the answer's start and
end token in the (question, context) pair; an answer cut off by truncation points at [CLS]."""

from __future__ import annotations

import torch

from harness.objectives import loop


def encode_pairs(tokenizer, batch: list[dict], max_len: int):
    return tokenizer([e["question"] for e in batch], [e["context"] for e in batch], truncation="only_second",
                     max_length=max_len, padding=True, return_offsets_mapping=True, return_tensors="pt")


def answer_span(sequence_ids: list, offsets: list, start_char: int, end_char: int) -> tuple[int, int]:
    """(start, end) token positions of the context characters [start_char, end_char); (0, 0) when
    the answer is not (fully) inside the encoded context."""
    start = end = None
    for pos, (seq, (a, b)) in enumerate(zip(sequence_ids, offsets)):
        if seq != 1 or a == b:
            continue
        if start is None and a <= start_char < b:
            start = pos
        if a < end_char <= b:
            end = pos
    return (start, end) if start is not None and end is not None and end >= start else (0, 0)


class ExtractiveQAObjective(loop.BatcherObjective):
    def batcher(self, tokenizer, train: list[dict], task: dict, budget: dict):
        def make_batch(indices):
            examples = [train[i] for i in indices]
            enc = encode_pairs(tokenizer, examples, budget["max_seq_len"])
            spans = [answer_span(enc.sequence_ids(j), enc["offset_mapping"][j].tolist(), int(e["answer_start"]),
                                 int(e["answer_start"]) + len(e["answer"])) for j, e in enumerate(examples)]
            batch = {k: v for k, v in enc.items() if k != "offset_mapping"}
            batch["start_positions"] = torch.tensor([s for s, _ in spans])
            batch["end_positions"] = torch.tensor([e for _, e in spans])
            return batch, int(enc["attention_mask"].sum())

        return make_batch
