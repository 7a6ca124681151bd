"""Batched prediction, the same for every arm: encoder heads (argmax), decoders scoring each
label's log-likelihood, or greedy generation with left padding and the KV cache."""

from __future__ import annotations

import statistics
import time

import torch

from harness.config.schema import Budget
from harness.data.encoding import left_padded
from harness.data.formatting import PromptFormatter, target_of
from harness.eval.likelihood import SharedPrefix, completion_logprobs
from harness.eval.predict_heads import Predictor, encoder_predictor_for
from harness.eval.scoring_rule import ScoringRule


def label_scoring_predictor(
    model, tokenizer, formatter: PromptFormatter, labels: list[str], max_len: int, rule: ScoringRule = ScoringRule()
) -> Predictor:
    """Pick the label whose completion scores highest after the prompt under the declared rule
    (summed log-probability of the label, with or without the end-of-turn token, optionally
    length-normalised). Every label is scored after the same prompt, cut to leave room for the
    longest label. Extras: each label's summed log-probability ("logprobs"), and the normalised
    score the choice was made on ("label_scores") when the rule normalises."""
    completions = [formatter.completion_ids(label, rule.end_of_turn) for label in labels]
    room = max_len - max(map(len, completions))
    shared = SharedPrefix(model)

    @torch.inference_mode()
    def predict(batch):
        prompts = [formatter.encode(e, None, room)[0] for e in batch]
        totals = completion_logprobs(model, prompts, completions, tokenizer.pad_token_id, shared)
        scores = rule.compare(totals, completions, labels)
        preds = [labels[i] for i in scores.argmax(-1).tolist()]
        extras = [{"logprobs": dict(zip(labels, map(lambda x: round(x, 4), row)))} for row in totals.tolist()]
        if rule.normalize != "none":
            for extra, row in zip(extras, scores.tolist()):
                extra["label_scores"] = dict(zip(labels, map(lambda x: round(x, 5), row)))
        return preds, extras

    return predict


def generation_predictor(
    model, tokenizer, formatter: PromptFormatter, max_len: int, max_new_tokens: int, labels: list[str] | None = None
) -> Predictor:
    """Greedy generation with left padding; for classification the text is mapped to a label."""
    device = next(model.parameters()).device

    @torch.inference_mode()
    def predict(batch):
        prompts = [formatter.encode(e, None, max_len - max_new_tokens)[0] for e in batch]
        pad = tokenizer.pad_token_id
        ids, mask = left_padded(prompts, pad, device)
        width = ids.shape[1]
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = out[:, width:]
        texts = [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        counts = [{"generated_tokens": n} for n in generated_lengths(new_tokens, tokenizer.eos_token_id)]
        if labels is None:
            return texts, counts
        return [match_label(t, labels) for t in texts], [{"generated": t, **c} for t, c in zip(texts, counts)]

    return predict


def generated_lengths(new_tokens: torch.Tensor, eos_id) -> list[int]:
    """Tokens each row really generated: up to and including its first eos (the rest is padding
    a finished row gets while the others go on)."""
    lengths = []
    for row in new_tokens.tolist():
        lengths.append(row.index(eos_id) + 1 if eos_id is not None and eos_id in row else len(row))
    return lengths


def match_label(text: str, labels: list[str]) -> str:
    """The label a generated text names first (case-insensitive); '' when it names none."""
    lowered = text.lower()
    found = [(lowered.find(label.lower()), label) for label in labels if label.lower() in lowered]
    return min(found)[1] if found else ""


def make_predictor(model, tokenizer, *, kind: str, task: dict, budget: Budget, shots: list[dict]) -> Predictor:
    max_len = budget.max_seq_len
    if kind == "encoder":
        return encoder_predictor_for(model, tokenizer, task, max_len)
    formatter = PromptFormatter(tokenizer, task, shots)
    if task["type"] == "classification" and task.get("decoder_eval", "score") == "score":
        return label_scoring_predictor(
            model, tokenizer, formatter, task["labels"], max_len + _shot_room(shots), ScoringRule.of_task(task)
        )
    labels = task["labels"] if task["type"] == "classification" else None
    return generation_predictor(model, tokenizer, formatter, max_len + _shot_room(shots), budget.max_new_tokens, labels)


def _shot_room(shots: list[dict]) -> int:
    # In-context examples lengthen the prompt; give them room instead of cutting the test input.
    return 0 if not shots else 4 * 64 * len(shots)


LATENCY_REPEATS = 3  # each latency item is timed this many times; its latency is the fastest


def run_predictions(
    predict: Predictor,
    examples: list[dict],
    task: dict,
    *,
    batch_size: int,
    latency_examples: int,
    on_batch=None,
    clock=None,
) -> tuple[list[dict], dict, dict]:
    """All test items in batches (throughput), then the first few alone (batch-1 latency).

    Returns (rows, cost metrics, the machine's load while they were measured). Latency: one
    untimed warm-up call, then each item LATENCY_REPEATS times, keeping its fastest time (other
    processes can only add time, so the minimum is the least disturbed estimate). `clock`
    (harness.eval.phases.PhaseClock) gets the phases "label_scoring"/"generation" and "latency".
    """
    from harness.eval.machine_load import LoadWindow, merge

    if clock:
        clock.start("generation" if _generates(predict) else "label_scoring")
    with LoadWindow() as batched:
        start = time.perf_counter()
        preds, extras = predict_in_batches(predict, examples, batch_size, on_batch=on_batch)
        elapsed = time.perf_counter() - start
    rows = [
        {
            "id": example["id"],
            "input": example.get("text", example.get("question")),
            "prediction": pred,
            "reference": target_of(example, task),
            **extra,
        }
        for example, pred, extra in zip(examples, preds, extras)
    ]
    if clock:
        clock.start("latency")
    timed = examples[:latency_examples]
    latencies = []
    with LoadWindow() as alone:
        if timed:
            predict([timed[0]])  # warm-up: first-call allocations and caches are not latency
        for example in timed:
            runs = []
            for _ in range(LATENCY_REPEATS):
                t0 = time.perf_counter()
                predict([example])
                runs.append((time.perf_counter() - t0) * 1000)
            latencies.append(min(runs))
    cost = {"eval_examples_per_s": round(len(examples) / elapsed, 3) if elapsed else None}
    generated = sum(r.get("generated_tokens", 0) for r in rows)
    if generated and elapsed:
        cost["generation_tokens_per_s"] = round(generated / elapsed, 2)
    if latencies:
        cost["latency_p50_ms"] = round(statistics.median(latencies), 2)
        cost["latency_p95_ms"] = round(_percentile(latencies, 95), 2)
    conditions = merge(batched.conditions(), alone.conditions() if timed else {})
    return rows, cost, {**conditions, "latency_repeats": LATENCY_REPEATS, "latency_warmup": bool(timed)}


def _generates(predict: Predictor) -> bool:
    return getattr(predict, "__qualname__", "").startswith("generation_predictor")


def predict_in_batches(predict: Predictor, examples: list[dict], batch_size: int, on_batch=None):
    """Predictions and extras for all examples, in their order, computed in batches of examples
    of similar length (longest first), so a batch pads little; which examples share a batch does
    not change a prediction (batched and one-at-a-time predictions are tested to agree)."""
    order = sorted(range(len(examples)), key=lambda i: -len(str(examples[i].get("text", ""))))
    preds: list = [None] * len(examples)
    extras: list = [None] * len(examples)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch_preds, batch_extras = predict([examples[i] for i in chunk])
        for i, pred, extra in zip(chunk, batch_preds, batch_extras):
            preds[i], extras[i] = pred, extra
        if on_batch:
            on_batch(min(start + batch_size, len(examples)), len(examples))
    return preds, extras


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
