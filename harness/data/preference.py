"""Preference pairs (prompt, chosen, rejected) for DPO/ORPO, and prompts with targets for GRPO.

Built honestly from a task's own split when the user gives no pairs: classification ->
chosen = the correct label, rejected = a seeded wrong label; generation -> chosen = the
example's own reference, rejected = the reference of another (seeded) example. Or read from a
user's JSONL with prompt/chosen/rejected fields. Prompts go through the task's PromptFormatter
(chat template included), so a pair is phrased exactly like SFT training and evaluation.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from harness.data.formatting import PromptFormatter, target_of
from harness.data.order import example_order

PAIR_FIELDS = ("prompt", "chosen", "rejected")


def fit_prompt(tokenizer, prompt: str, room: int) -> str:
    """The prompt cut from the left to at most `room` tokens (like PromptFormatter.encode)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return prompt if len(ids) <= room else tokenizer.decode(ids[-max(room, 1) :])


def _rejected(example: dict, pool: list[dict], task: dict, rng: random.Random) -> str:
    target = target_of(example, task)
    if task["type"] == "classification":
        wrong = [label for label in task["labels"] if label != target]
        return rng.choice(wrong)
    # Draw until another example's reference differs (bounded; a pool of one summary is an error).
    for _ in range(100):
        other = pool[rng.randrange(len(pool))]["reference"]
        if other != target:
            return other
    raise ValueError("no other example with a different reference to reject")


def build_pairs(
    examples: list[dict], task: dict, tokenizer, *, seed: int, max_len: int, pool: list[dict] | None = None
) -> list[dict]:
    """One pair per example. Each pair depends only on its example, the pool the rejected
    summaries come from (default: the examples) and the seed, not on which others are built."""
    formatter = PromptFormatter(tokenizer, task)
    pool = pool or examples
    pairs = []
    for example in examples:
        rng = random.Random(f"{seed}:{example['id']}")
        target = target_of(example, task)
        rejected = _rejected(example, pool, task, rng)
        chosen_text, rejected_text = formatter.completion(target), formatter.completion(rejected)
        longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (chosen_text, rejected_text))
        pairs.append(
            {
                "id": example["id"],
                "prompt": fit_prompt(tokenizer, formatter.prompt(example), max_len - longest),
                "chosen": chosen_text,
                "rejected": rejected_text,
                "target": target,
                "labels": list(task.get("labels") or []),
            }
        )
    return pairs


def load_pairs(path: str | Path, task: dict, tokenizer, *, max_len: int) -> list[dict]:
    """A user's JSONL of prompt/chosen/rejected; the prompt is the user turn of the chat template."""
    formatter = PromptFormatter(tokenizer, {**task, "prompt": "{text}"})
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [f for f in PAIR_FIELDS if not isinstance(row.get(f), str)]
            if missing:
                raise ValueError(f"{path}:{n}: field '{missing[0]}' is missing or not text")
            chosen, rejected = formatter.completion(row["chosen"]), formatter.completion(row["rejected"])
            longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (chosen, rejected))
            pairs.append(
                {
                    "id": str(row.get("id", f"pair-{n}")),
                    "prompt": fit_prompt(tokenizer, formatter.prompt({"text": row["prompt"]}), max_len - longest),
                    "chosen": chosen,
                    "rejected": rejected,
                    "target": row["chosen"],
                    "labels": list(task.get("labels") or []),
                }
            )
    return pairs


def task_pairs(
    task: dict, examples: list[dict], split: str, tokenizer, *, seed: int, max_len: int, count: int | None = None
) -> list[dict]:
    """`count` pairs of a task's split in the budget's seeded order (all, in file order, when
    count is None): the user's file (data.preference / data.preference_test) when given, else
    built from the split's examples (only those needed)."""

    path = task["data"].get("preference" if split == "train" else "preference_test")
    if path:
        pairs = load_pairs(path, task, tokenizer, max_len=max_len)
        return pairs if count is None else [pairs[i] for i in example_order(len(pairs), count, seed)]
    if count is None:
        return build_pairs(examples, task, tokenizer, seed=seed, max_len=max_len)
    order = example_order(len(examples), count, seed)
    built = dict(
        zip(
            sorted(set(order)),
            build_pairs(
                [examples[i] for i in sorted(set(order))], task, tokenizer, seed=seed, max_len=max_len, pool=examples
            ),
        )
    )
    return [built[i] for i in order]
