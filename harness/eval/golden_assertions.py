"""A golden item's `expect:` assertions evaluated on one output: (failures, notes), each failure
saying what was expected and what came."""

from __future__ import annotations

import json
import re

from harness.config.golden_set import GoldenItem
from harness.eval.text_metrics import rouge


def check_item(
    item: GoldenItem,
    *,
    text: str | None,
    label: str | None,
    n_tokens: int | None,
    latency_ms: float | None,
    bertscore=None,
) -> tuple[list[str], list[str]]:
    """(failures, notes) for one item's output. Each failure says what was expected and got.
    `bertscore`: the experiment's scorer (harness.eval.bertscore.BertScore), None when it is off."""
    failures, notes = [], []
    out = text or ""
    low = out.lower()
    for key, want in item.expect.given().items():
        if key == "equals" and out.strip().lower() != want.strip().lower():
            failures.append(f"equals: expected {want!r}, got {out!r}")
        elif key == "contains":
            failures += [f"contains: {w!r} not in output" for w in want if w.lower() not in low]
        elif key == "not_contains":
            failures += [f"not_contains: {w!r} is in output" for w in want if w.lower() in low]
        elif key == "regex" and not re.search(want, out):
            failures.append(f"regex: /{want}/ does not match")
        elif key == "label" and label != want:
            failures.append(f"label: expected {want!r}, got {label!r}")
        elif key == "json_valid":
            try:
                json.loads(out)
            except ValueError:
                failures.append("json_valid: output is not JSON")
        elif key == "rouge_l":
            value = rouge("rougeL", out, item.reference)
            if value < want:
                failures.append(f"rouge_l: {value:.3f} < {want}")
        elif key == "bertscore":
            value = bertscore([out], [item.reference])[0] if bertscore is not None else None
            if value is None:
                notes.append("bertscore skipped: budget.bertscore_model is null (BERTScore off)")
            elif value < want:
                failures.append(f"bertscore: {value:.3f} < {want}")
        elif key == "max_tokens" and n_tokens is not None and n_tokens > want:
            failures.append(f"max_tokens: {n_tokens} > {want}")
        elif key == "max_latency_ms" and latency_ms is not None and latency_ms > want:
            failures.append(f"max_latency_ms: {latency_ms:.0f} > {want}")
    return failures, notes


def describe_expected(item: GoldenItem) -> str:
    """The assertions as one line, for reports and JUnit failures."""
    parts = []
    for key, value in item.expect.given().items():
        if key == "json_valid":
            parts.append("valid JSON")
        elif key in ("rouge_l", "bertscore"):
            parts.append(f"{key} >= {value}")
        elif key in ("max_tokens", "max_latency_ms"):
            parts.append(f"{key} <= {value}")
        elif key in ("contains", "not_contains"):
            parts.append(f"{key} {', '.join(map(repr, value))}")
        else:
            parts.append(f"{key} = {value!r}")
    if item.reference and ("rouge_l" in item.expect.given() or "bertscore" in item.expect.given()):
        parts.append(f"reference: {item.reference}")
    return "; ".join(parts)
