"""Batched prediction with an encoder head, per task type: labels (argmax), BIO tags per word
(token classification) or the best answer span of the context (extractive QA)."""

from __future__ import annotations

import torch

from harness.objectives.extractive_qa import encode_pairs
from harness.objectives.token_classification import encode_words, first_subtoken_tags

MAX_ANSWER_TOKENS = 30


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
            preds.append(example["context"][offsets[s][0]:offsets[e][1]] if allowed[s] else "")
            extras.append({"span_tokens": [s, e]})
        return preds, extras

    return predict


def encoder_predictor_for(model, tokenizer, task: dict, max_len: int):
    from harness.eval.predict import encoder_predictor

    makers = {"classification": lambda: encoder_predictor(model, tokenizer, task["labels"], max_len),
              "token_classification": lambda: token_predictor(model, tokenizer, task["labels"], max_len),
              "extractive_qa": lambda: qa_predictor(model, tokenizer, max_len)}
    return makers[task["type"]]()
