"""Token classification (NER) with an encoder head: cross-entropy per word on its first
sub-token; later sub-tokens, special tokens and padding are ignored (-100)."""

from __future__ import annotations

import torch

from harness.objectives import loop

IGNORE = -100


def encode_words(tokenizer, words: list[list[str]], max_len: int):
    """A batch of pre-split sentences; the BatchEncoding keeps word_ids(i) (fast tokenizers)."""
    return tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_len, padding=True,
                     return_tensors="pt")


def align_labels(word_ids: list[int | None], tags: list[str], label_id: dict[str, int]) -> list[int]:
    """The tag id of each word on its first sub-token; IGNORE elsewhere."""
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE if word is None or word == previous else label_id[tags[word]])
        previous = word
    return out


def first_subtoken_tags(word_ids: list[int | None], token_label_ids: list[int], labels: list[str],
                        n_words: int) -> list[str]:
    """Per word, the label predicted at its first sub-token; words cut off by truncation get "O"."""
    tags = ["O"] * n_words
    previous = None
    for word, label in zip(word_ids, token_label_ids):
        if word is not None and word != previous:
            tags[word] = labels[label]
        previous = word
    return tags


class TokenClassificationObjective(loop.BatcherObjective):
    def batcher(self, tokenizer, train: list[dict], task: dict, budget: dict):
        label_id = {label: i for i, label in enumerate(task["labels"])}

        def make_batch(indices):
            enc = encode_words(tokenizer, [train[i]["tokens"] for i in indices], budget["max_seq_len"])
            labels = [align_labels(enc.word_ids(j), train[i]["tags"], label_id) for j, i in enumerate(indices)]
            batch = dict(enc)
            batch["labels"] = torch.tensor(labels)
            return batch, int(enc["attention_mask"].sum())

        return make_batch
