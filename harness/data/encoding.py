"""Examples -> token ids, and token positions <-> labels: the one encoding training and evaluation
share (so a head is scored on exactly the positions it was trained on)."""

from __future__ import annotations

import torch

IGNORE = -100  # label id the loss skips: prompt tokens, later sub-tokens, padding


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


def left_padded(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask with the padding on the left, so every prompt ends at the last
    column: where generation (and a KV cache continued per row) picks up."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask


def encode_texts(tokenizer, texts: list[str], max_len: int) -> dict:
    return tokenizer(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")


def encode_words(tokenizer, words: list[list[str]], max_len: int):
    """A batch of pre-split sentences; the BatchEncoding keeps word_ids(i) (fast tokenizers)."""
    return tokenizer(
        words, is_split_into_words=True, truncation=True, max_length=max_len, padding=True, return_tensors="pt"
    )


def align_labels(word_ids: list[int | None], tags: list[str], label_id: dict[str, int]) -> list[int]:
    """The tag id of each word on its first sub-token; IGNORE elsewhere."""
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE if word is None or word == previous else label_id[tags[word]])
        previous = word
    return out


def first_subtoken_tags(
    word_ids: list[int | None], token_label_ids: list[int], labels: list[str], n_words: int
) -> list[str]:
    """Per word, the label predicted at its first sub-token; words cut off by truncation get "O"."""
    tags = ["O"] * n_words
    previous = None
    for word, label in zip(word_ids, token_label_ids):
        if word is not None and word != previous:
            tags[word] = labels[label]
        previous = word
    return tags


def encode_pairs(tokenizer, batch: list[dict], max_len: int):
    return tokenizer(
        [e["question"] for e in batch],
        [e["context"] for e in batch],
        truncation="only_second",
        max_length=max_len,
        padding=True,
        return_offsets_mapping=True,
        return_tensors="pt",
    )


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
