"""Golden sets: the schema of a golden set file and load_golden(path).

A golden set (golden_sets/*.yaml) is a name, a task type, a version and items; each item has an
input (text, or chat messages), an optional reference, tags, `must: true` when it may never
fail, and `expect:` assertions. `load_golden(path)` validates it with the same one-sentence
errors as experiments; `score_golden(...)` (harness.eval.golden_scoring) runs a model on every item and evaluates every
assertion, giving per-item pass/fail with the expected and the actual text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


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
    bertscore: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="BERTScore F1 against the reference >= x (the experiment's budget.bertscore_model)",
    )
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
    instruction: str | None = Field(
        default=None, description="system turn for text inputs; the arm's task's when omitted"
    )
    prompt: str | None = Field(
        default=None, description="user-turn template with {text}; the arm's task's when omitted"
    )
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
                raise ValueError(
                    f"prompt may use only {{text}} (and {{id}}), not {{{sorted(fields - {'text', 'id'})[0]}}}"
                )
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
    from harness.config.yamlfile import load_yaml_text, read_text_file
    from harness.errors import HarnessError

    try:
        return looks_like_golden(load_yaml_text(read_text_file(path, what="file"), file=str(path)))
    except HarnessError:
        return False


def load_golden(path: str | Path) -> GoldenSet:
    from harness.config.yamlfile import read_yaml_mapping, schema_error

    path = Path(path)
    raw, text = read_yaml_mapping(path, what="golden set", keys="name, task, version and items")
    try:
        return GoldenSet.model_validate(raw)
    except ValidationError as err:
        raise schema_error(err, text, str(path), root=GoldenSet) from None
