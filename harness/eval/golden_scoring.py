"""Running a model on a golden set: every item one at a time (its latency is batch-1), every
assertion evaluated; and the hook an arm's process calls for the experiment's golden sets."""

from __future__ import annotations

import time
from pathlib import Path

from harness.config.golden_set import GoldenItem, GoldenSet, load_golden
from harness.data.formatting import PromptFormatter
from harness.eval import base_cache, predict
from harness.eval.bertscore import from_budget
from harness.eval.golden_assertions import check_item, describe_expected
from harness.eval.predict_heads import encoder_predictor
from harness.eval.scoring_rule import ScoringRule


def golden_task(golden: GoldenSet, arm_task: dict | None = None) -> dict:
    """How prompts are built: the set's instruction and prompt, else the arm's task's (so a
    fine-tuned arm sees the format it was trained on), else the bare text."""
    arm_task = arm_task or {}
    prompt = golden.prompt or arm_task.get("prompt") or "{text}"
    instruction = golden.instruction if golden.instruction is not None else arm_task.get("instruction")
    return {
        "type": golden.task,
        "instruction": instruction,
        "prompt": prompt,
        "labels": golden.labels,
        "label_scoring": arm_task.get("label_scoring"),
    }


def _example(item: GoldenItem) -> dict:
    if isinstance(item.input, str):
        return {"id": item.id, "text": item.input}
    user = "\n".join(m.content for m in item.input if m.role == "user")
    return {"id": item.id, "text": user, "messages": [m.model_dump() for m in item.input]}


def _formatter(tokenizer, task: dict):
    class GoldenFormatter(PromptFormatter):
        """Text inputs go through the task's template; chat inputs are used as written."""

        def prompt(self, example):
            messages = example.get("messages")
            if not messages:
                return super().prompt(example)
            if self.chat:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)

    return GoldenFormatter(tokenizer, task)


def score_golden(
    golden: GoldenSet,
    model,
    tokenizer,
    *,
    kind: str,
    arm_task: dict | None = None,
    max_seq_len: int = 512,
    head_labels: list[str] | None = None,
    bertscore=None,
) -> list[dict]:
    """Every item, one at a time (its latency is batch-1): label scoring for `label`
    assertions, greedy generation for the others; each assertion evaluated."""
    task = golden_task(golden, arm_task)
    if kind == "encoder":
        # A classification head can only name one of its labels; that is its output text.
        labels = head_labels or golden.labels or []
        by_label = encoder_predictor(model, tokenizer, labels, max_seq_len)
        by_text = None
    else:
        formatter = _formatter(tokenizer, task)
        by_label = (
            predict.label_scoring_predictor(
                model, tokenizer, formatter, golden.labels, max_seq_len, ScoringRule.of_task(task)
            )
            if golden.labels
            else None
        )
        by_text = predict.generation_predictor(
            model, tokenizer, formatter, max_seq_len + golden.max_new_tokens, golden.max_new_tokens
        )
    rows = []
    for item in golden.items:
        example = _example(item)
        t0 = time.perf_counter()
        label = text = None
        if item.expect.label is not None and by_label is not None:
            label = by_label([example])[0][0]
        if item.expect.needs_text() or by_label is None:
            text = by_text([example])[0][0] if by_text is not None else (label or by_label([example])[0][0])
        latency = (time.perf_counter() - t0) * 1000
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text is not None else None
        failures, notes = check_item(
            item, text=text, label=label, n_tokens=n_tokens, latency_ms=latency, bertscore=bertscore
        )
        actual = text if text is not None else label
        if text is not None and label is not None and text != label:
            actual = f"label {label!r}; text {text!r}"
        rows.append(
            {
                "id": item.id,
                "passed": not failures,
                "must": item.must,
                "tags": item.tags,
                "expected": describe_expected(item),
                "actual": actual,
                "failures": failures,
                "notes": notes,
                "latency_ms": round(latency, 2),
            }
        )
    return rows


def summarize(rows: list[dict]) -> dict:
    passed = sum(r["passed"] for r in rows)
    return {
        "passed": passed,
        "total": len(rows),
        "pass_rate": round(passed / len(rows), 6) if rows else 0.0,
        "must_failed": [r["id"] for r in rows if r["must"] and not r["passed"]],
    }


def set_result(golden: GoldenSet, rows: list[dict], path: str | None = None) -> dict:
    """What an arm records for one golden set (results.json -> arms[i].golden[set name])."""
    return {"set": golden.name, "version": golden.version, "path": path, **summarize(rows), "items": rows}


def uses_bertscore(golden: GoldenSet) -> bool:
    return any("bertscore" in item.expect.given() for item in golden.items)


def score_arm_on_golden_sets(
    arm, model, tokenizer, *, kind: str, task: dict, base_identity: dict | None = None
) -> dict:
    """{set name: set_result} for every golden set the arm's experiment names; {} when none.
    A broken golden set is reported in its entry, never fails the arm. `base_identity` (an arm
    that runs the untouched base model, harness.eval.base_cache.model_identity): the set's
    results are computed once per machine for that model, set and prompt format, and reused."""

    results = {}
    for path in getattr(arm, "golden_sets", None) or []:
        try:
            golden = load_golden(path)
            # the experiment's BERTScore scorer (budget.bertscore_model/layer), like every other score
            scorer = from_budget(arm.budget, Path(arm.base_dir)) if uses_bertscore(golden) else None

            def score(golden=golden, scorer=scorer):
                return score_golden(
                    golden,
                    model,
                    tokenizer,
                    kind=kind,
                    arm_task=task,
                    bertscore=scorer,
                    max_seq_len=arm.budget.max_seq_len,
                    head_labels=task.get("labels"),
                )

            reused = False
            if base_identity is None:
                rows = score()
            else:
                key = {
                    "model": base_identity,
                    "set": base_cache.text_fingerprint(Path(path).read_text(encoding="utf-8")),
                    "format": golden_task(golden, task),
                    "max_seq_len": arm.budget.max_seq_len,
                    "head_labels": task.get("labels"),
                    "kind": kind,
                    "bertscore": scorer.detail() if scorer is not None else None,
                }
                rows, reused = base_cache.cached("golden", key, score)
            results[golden.name] = {
                **set_result(golden, rows, str(path)),
                **({"reused_base_result": True} if reused else {}),
            }
        except Exception as err:  # noqa: BLE001 - the arm's main result must survive
            results[Path(path).stem] = {
                "set": Path(path).stem,
                "path": str(path),
                "error": f"{type(err).__name__}: {err}",
                "items": [],
            }
    return results
