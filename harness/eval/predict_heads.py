"""Batched prediction with an encoder head, per task type: labels (argmax), BIO tags per word
(token classification) or the best answer span of the context (extractive QA)."""

from __future__ import annotations

from typing import Callable

import torch

from harness.data.encoding import encode_pairs, encode_texts, encode_words, first_subtoken_tags
from harness.tasks import task_type

MAX_ANSWER_TOKENS = 30

# A predictor maps a batch of examples to (predictions, per-example extra info).
Predictor = Callable[[list[dict]], tuple[list[str], list[dict]]]


def encoder_predictor(model, tokenizer, labels: list[str], max_len: int) -> Predictor:
    device = next(model.parameters()).device

    @torch.inference_mode()
    def predict(batch):
        inputs = encode_texts(tokenizer, [e["text"] for e in batch], max_len).to(device)
        probs = model(**inputs).logits.float().softmax(-1)
        preds = [labels[i] for i in probs.argmax(-1).tolist()]
        return preds, [{"probs": dict(zip(labels, map(lambda p: round(p, 5), row)))} for row in probs.tolist()]

    return predict


def token_predictor(model, tokenizer, labels: list[str], max_len: int):
    device = next(model.parameters()).device

    @torch.inference_mode()
    def predict(batch):
        enc = encode_words(tokenizer, [e["tokens"] for e in batch], max_len)
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
        ids = logits.argmax(-1).tolist()
        preds = [first_subtoken_tags(enc.word_ids(i), ids[i], labels, len(e["tokens"])) for i, e in enumerate(batch)]
        return preds, [{} for _ in batch]

    return predict


def best_span(start: list[float], end: list[float], allowed: list[bool], max_tokens: int = MAX_ANSWER_TOKENS):
    """(s, e) maximising start[s] + end[e] with s <= e < s + max_tokens, both in allowed positions."""
    best, span = float("-inf"), (0, 0)
    positions = [i for i, ok in enumerate(allowed) if ok]
    for s in positions:
        for e in positions:
            if s <= e < s + max_tokens and start[s] + end[e] > best:
                best, span = start[s] + end[e], (s, e)
    return span


def qa_predictor(model, tokenizer, max_len: int):
    device = next(model.parameters()).device

    @torch.inference_mode()
    def predict(batch):
        enc = encode_pairs(tokenizer, batch, max_len)
        out = model(**{k: v.to(device) for k, v in enc.items() if k != "offset_mapping"})
        preds, extras = [], []
        for i, example in enumerate(batch):
            offsets = enc["offset_mapping"][i].tolist()
            allowed = [seq == 1 and a < b for seq, (a, b) in zip(enc.sequence_ids(i), offsets)]
            s, e = best_span(out.start_logits[i].tolist(), out.end_logits[i].tolist(), allowed)
            preds.append(example["context"][offsets[s][0] : offsets[e][1]] if allowed[s] else "")
            extras.append({"span_tokens": [s, e]})
        return preds, extras

    return predict


ENCODER_PREDICTORS = {  # harness.tasks.TaskType.predictor -> (model, tokenizer, task, max_len) -> Predictor
    "sequence": lambda model, tokenizer, task, max_len: encoder_predictor(model, tokenizer, task["labels"], max_len),
    "token": lambda model, tokenizer, task, max_len: token_predictor(model, tokenizer, task["labels"], max_len),
    "span": lambda model, tokenizer, task, max_len: qa_predictor(model, tokenizer, max_len),
}


def encoder_predictor_for(model, tokenizer, task: dict, max_len: int) -> Predictor:
    """The predictor of the encoder head the task type has (harness.tasks)."""
    return ENCODER_PREDICTORS[task_type(task["type"]).predictor](model, tokenizer, task, max_len)
