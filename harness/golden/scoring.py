"""Golden sets: fixed prompts with expected behaviour, scored item by item.

A golden set (golden_sets/*.yaml) is a name, a task type, a version and items; each item has an
input (text, or chat messages), an optional reference, tags, `must: true` when it may never
fail, and `expect:` assertions. `load_golden(path)` validates it with the same one-sentence
errors as experiments; `score_golden(...)` runs a model on every item and evaluates every
assertion, giving per-item pass/fail with the expected and the actual text.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import HarnessError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class Expect(_Strict):
    """The assertions of one item; every one given must hold for the item to pass."""

    equals: str | None = Field(default=None, description="the output equals this (trimmed, case-insensitive)")
    contains: list[str] = Field(default_factory=list, description="the output contains each (case-insensitive)")
    not_contains: list[str] = Field(default_factory=list, description="the output contains none (case-insensitive)")
    regex: str | None = Field(default=None, description="re.search matches the output")
    label: str | None = Field(default=None, description="the predicted label (label scoring over the set's labels)")
    json_valid: bool = Field(default=False, description="the output parses as JSON")
    rouge_l: float | None = Field(default=None, ge=0, le=1, description="ROUGE-L F against the reference >= x")
    bertscore: float | None = Field(default=None, ge=-1, le=1,
                                    description="BERTScore F1 against the reference >= x (needs HARNESS_BERTSCORE_MODEL)")
    max_tokens: int | None = Field(default=None, gt=0, description="the output has at most this many tokens")
    max_latency_ms: float | None = Field(default=None, gt=0, description="the item took at most this long (batch 1)")

    @field_validator("contains", "not_contains", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value):
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"regex does not compile ({err})") from None
        return value

    def given(self) -> dict[str, Any]:
        """The assertions that were set, in declaration order."""
        return {k: v for k, v in self.model_dump().items() if v not in (None, [], False)}

    def needs_text(self) -> bool:
        return any(k != "label" for k in self.given())


class GoldenItem(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    input: str | list[Message]
    reference: str | None = None
    tags: list[str] = Field(default_factory=list)
    must: bool = False
    expect: Expect

    @model_validator(mode="after")
    def _consistent(self):
        given = self.expect.given()
        if not given:
            raise ValueError("has no assertions; add at least one under `expect:` (for example `label: positive`)")
        if ("rouge_l" in given or "bertscore" in given) and not self.reference:
            raise ValueError("rouge_l and bertscore compare with `reference:`, which this item lacks")
        return self


class GoldenSet(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Literal["classification", "generation"]
    version: str = Field(description="bump when items or assertions change; baselines are recorded per version")
    description: str | None = None
    labels: list[str] | None = Field(default=None, description="label assertions choose among these")
    instruction: str | None = Field(default=None, description="system turn for text inputs; the arm's task's when omitted")
    prompt: str | None = Field(default=None, description="user-turn template with {text}; the arm's task's when omitted")
    max_new_tokens: int = Field(default=48, gt=0)
    items: list[GoldenItem] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value):
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("prompt")
    @classmethod
    def _prompt_fields(cls, value):
        import string

        if value is not None:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f}
            if fields - {"text", "id"}:
                raise ValueError(f"prompt may use only {{text}} (and {{id}}), not {{{sorted(fields - {'text', 'id'})[0]}}}")
        return value

    @model_validator(mode="after")
    def _items_agree(self):
        seen: set[str] = set()
        for item in self.items:
            if item.id in seen:
                raise ValueError(f"item id '{item.id}' appears twice; ids must be unique")
            seen.add(item.id)
            label = item.expect.label
            if label is not None and not self.labels:
                raise ValueError(f"item '{item.id}' asserts a label but the set has no `labels:` list")
            if label is not None and label not in self.labels:
                raise ValueError(f"item '{item.id}' expects label '{label}', which is not in labels {self.labels}")
        return self


# ---------------------------------------------------------------- loading and detection

def looks_like_golden(raw: Any) -> bool:
    """A YAML mapping with `items:` and no `arms:` is a golden set, not an experiment."""
    return isinstance(raw, dict) and "items" in raw and "arms" not in raw


def is_golden_file(path: str | Path) -> bool:
    """Whether a YAML file holds a golden set (by its keys); False when unreadable, so the
    experiment loader reports the problem."""
    try:
        return looks_like_golden(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False


def load_golden(path: str | Path) -> GoldenSet:
    from harness.config import read_yaml_mapping, schema_error

    path = Path(path)
    raw, text = read_yaml_mapping(path, what="golden set", keys="name, task, version and items")
    try:
        return GoldenSet.model_validate(raw)
    except ValidationError as err:
        raise schema_error(err, text, str(path), root=GoldenSet) from None


# ---------------------------------------------------------------- evaluating assertions

def _rouge_l(prediction: str, reference: str) -> float:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, prediction)["rougeL"].fmeasure


_BERTSCORER = None


def _bertscore(prediction: str, reference: str) -> float | None:
    """BERTScore F1 with a local model named by HARNESS_BERTSCORE_MODEL (path) and
    HARNESS_BERTSCORE_LAYERS; None when not configured (offline: no hub download)."""
    import os

    global _BERTSCORER
    model = os.environ.get("HARNESS_BERTSCORE_MODEL")
    if not model:
        return None
    if _BERTSCORER is None:
        from bert_score import BERTScorer

        _BERTSCORER = BERTScorer(model_type=model, num_layers=int(os.environ.get("HARNESS_BERTSCORE_LAYERS", "6")))
    _, _, f1 = _BERTSCORER.score([prediction], [reference])
    return float(f1[0])


def check_item(item: GoldenItem, *, text: str | None, label: str | None, n_tokens: int | None,
               latency_ms: float | None) -> tuple[list[str], list[str]]:
    """(failures, notes) for one item's output. Each failure says what was expected and got."""
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
            value = _rouge_l(out, item.reference)
            if value < want:
                failures.append(f"rouge_l: {value:.3f} < {want}")
        elif key == "bertscore":
            value = _bertscore(out, item.reference)
            if value is None:
                notes.append("bertscore skipped: set HARNESS_BERTSCORE_MODEL to a local encoder folder")
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


# ---------------------------------------------------------------- running a model on a set

def golden_task(golden: GoldenSet, arm_task: dict | None = None) -> dict:
    """How prompts are built: the set's instruction and prompt, else the arm's task's (so a
    fine-tuned arm sees the format it was trained on), else the bare text."""
    arm_task = arm_task or {}
    prompt = golden.prompt or arm_task.get("prompt") or "{text}"
    instruction = golden.instruction if golden.instruction is not None else arm_task.get("instruction")
    return {"type": golden.task, "instruction": instruction, "prompt": prompt, "labels": golden.labels}


def _example(item: GoldenItem) -> dict:
    if isinstance(item.input, str):
        return {"id": item.id, "text": item.input}
    user = "\n".join(m.content for m in item.input if m.role == "user")
    return {"id": item.id, "text": user, "messages": [m.model_dump() for m in item.input]}


def _formatter(tokenizer, task: dict):
    from harness.data.formatting import PromptFormatter

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


def score_golden(golden: GoldenSet, model, tokenizer, *, kind: str, arm_task: dict | None = None,
                 max_seq_len: int = 512, head_labels: list[str] | None = None) -> list[dict]:
    """Every item, one at a time (its latency is batch-1): label scoring for `label`
    assertions, greedy generation for the others; each assertion evaluated."""
    from harness.eval import predict

    task = golden_task(golden, arm_task)
    if kind == "encoder":
        # A classification head can only name one of its labels; that is its output text.
        labels = head_labels or golden.labels or []
        by_label = predict.encoder_predictor(model, tokenizer, labels, max_seq_len)
        by_text = None
    else:
        formatter = _formatter(tokenizer, task)
        by_label = (predict.label_scoring_predictor(model, tokenizer, formatter, golden.labels, max_seq_len)
                    if golden.labels else None)
        by_text = predict.generation_predictor(model, tokenizer, formatter, max_seq_len + golden.max_new_tokens,
                                               golden.max_new_tokens)
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
        failures, notes = check_item(item, text=text, label=label, n_tokens=n_tokens, latency_ms=latency)
        actual = text if text is not None else label
        if text is not None and label is not None and text != label:
            actual = f"label {label!r}; text {text!r}"
        rows.append({"id": item.id, "passed": not failures, "must": item.must, "tags": item.tags,
                     "expected": describe_expected(item), "actual": actual, "failures": failures,
                     "notes": notes, "latency_ms": round(latency, 2)})
    return rows


def summarize(rows: list[dict]) -> dict:
    passed = sum(r["passed"] for r in rows)
    return {"passed": passed, "total": len(rows), "pass_rate": round(passed / len(rows), 6) if rows else 0.0,
            "must_failed": [r["id"] for r in rows if r["must"] and not r["passed"]]}


def set_result(golden: GoldenSet, rows: list[dict], path: str | None = None) -> dict:
    """What an arm records for one golden set (results.json -> arms[i].golden[set name])."""
    return {"set": golden.name, "version": golden.version, "path": path, **summarize(rows), "items": rows}


# ---------------------------------------------------------------- the hook execute.py calls

def score_arm_on_golden_sets(arm, model, tokenizer, *, kind: str, task: dict) -> dict:
    """{set name: set_result} for every golden set the arm's experiment names; {} when none.
    A broken golden set is reported in its entry, never fails the arm."""
    results = {}
    for path in getattr(arm, "golden_sets", None) or []:
        try:
            golden = load_golden(path)
            rows = score_golden(golden, model, tokenizer, kind=kind, arm_task=task,
                                max_seq_len=arm.budget["max_seq_len"], head_labels=task.get("labels"))
            results[golden.name] = set_result(golden, rows, str(path))
        except Exception as err:  # noqa: BLE001 - the arm's main result must survive
            results[Path(path).stem] = {"set": Path(path).stem, "path": str(path), "error": f"{type(err).__name__}: {err}",
                                        "items": []}
    return results


def golden_rows(results: dict) -> list[dict]:
    """A flat list over a run's results.json, for reports: {set, arm, item_id, passed, must, ...}."""
    rows = []
    for arm in results.get("arms", []):
        for name, entry in (arm.get("golden") or {}).items():
            for item in entry.get("items", []):
                rows.append({"set": name, "arm": arm["arm"]["name"], "item_id": item["id"], "passed": item["passed"],
                             "must": item["must"], "expected": item["expected"], "actual": item["actual"],
                             "failures": item["failures"]})
    return rows


def print_golden_summary(results: dict, console) -> None:
    """One line per arm and golden set: the pass rate and the failing `must` items."""
    for arm in results.get("arms", []):
        for name, entry in (arm.get("golden") or {}).items():
            if entry.get("error"):
                console.print(f"[red]golden {name}[/] {arm['arm']['name']}: {entry['error']}")
                continue
            must = entry.get("must_failed") or []
            colour = "red" if must else "green"
            console.print(f"[{colour}]golden {name}@{entry.get('version')}[/] {arm['arm']['name']}: "
                          f"{entry['passed']}/{entry['total']} items pass ({entry['pass_rate']:.0%})"
                          + (f"; must items failing: {', '.join(must)}" if must else ""), highlight=False)
