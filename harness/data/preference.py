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

PAIR_FIELDS = ("prompt", "chosen", "rejected")


def fit_prompt(tokenizer, prompt: str, room: int) -> str:
    """The prompt cut from the left to at most `room` tokens (like PromptFormatter.encode)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return prompt if len(ids) <= room else tokenizer.decode(ids[-max(room, 1):])


def _rejected(i: int, examples: list[dict], task: dict, rng: random.Random) -> str:
    target = target_of(examples[i], task)
    if task["type"] == "classification":
        wrong = [label for label in task["labels"] if label != target]
        return rng.choice(wrong)
    others = [j for j in range(len(examples)) if j != i and examples[j]["reference"] != target]
    if not others:
        raise ValueError("every example has the same reference: no other summary to reject")
    return examples[rng.choice(others)]["reference"]


def build_pairs(examples: list[dict], task: dict, tokenizer, *, seed: int, max_len: int) -> list[dict]:
    """One pair per example, deterministic in (examples, seed)."""
    formatter = PromptFormatter(tokenizer, task)
    rng = random.Random(seed)
    pairs = []
    for i, example in enumerate(examples):
        target = target_of(example, task)
        rejected = _rejected(i, examples, task, rng)
        chosen_text, rejected_text = formatter.completion(target), formatter.completion(rejected)
        longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (chosen_text, rejected_text))
        pairs.append({"id": example["id"], "prompt": fit_prompt(tokenizer, formatter.prompt(example), max_len - longest),
                      "chosen": chosen_text, "rejected": rejected_text, "target": target,
                      "labels": list(task.get("labels") or [])})
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
            pairs.append({"id": str(row.get("id", f"pair-{n}")),
                          "prompt": fit_prompt(tokenizer, formatter.prompt({"text": row["prompt"]}), max_len - longest),
                          "chosen": chosen, "rejected": rejected, "target": row["chosen"],
                          "labels": list(task.get("labels") or [])})
    return pairs


def task_pairs(task: dict, examples: list[dict], split: str, tokenizer, *, seed: int, max_len: int) -> list[dict]:
    """Pairs of a task's split: the user's file (data.preference / data.preference_test) when
    given, else built from the split's examples."""
    key = "preference" if split == "train" else "preference_test"
    path = task["data"].get(key)
    if path:
        return load_pairs(path, task, tokenizer, max_len=max_len)
    return build_pairs(examples, task, tokenizer, seed=seed, max_len=max_len)
