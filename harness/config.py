"""The experiment schema (pydantic) and load_experiment(path) -> Experiment.

Structural checks live in the schema (unknown keys, wrong types); checks that need the outside
world (method registry, files, columns, model kinds) live in `check_experiment`, so every error
a user can cause comes out as one sentence naming the file, the line, the key path and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from harness.errors import HarnessError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(Strict):
    """Either a prepared dataset shipped with harness (`prepared: sentiment`) or files."""

    prepared: str | None = None
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: Literal["jsonl", "csv", "parquet"] | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    preference: str | None = Field(default=None, description="JSONL of prompt/chosen/rejected for preference stages")
    preference_test: str | None = Field(default=None, description="held-out pairs; default: built from the test split")

    @model_validator(mode="after")
    def _one_source(self):
        if self.prepared is None and (self.train is None or self.test is None):
            raise ValueError("give either `prepared: <name>` or both `train:` and `test:` files")
        if self.prepared is not None and (self.train or self.test or self.validation):
            raise ValueError("give either `prepared:` or files (`train:`/`test:`), not both")
        return self


class TaskSpec(Strict):
    type: Literal["classification", "generation", "token_classification", "extractive_qa"] = "classification"
    data: DataSpec
    labels: list[str] | None = Field(
        default=None, description="classification labels (BIO tags for token_classification); "
                                   "read from the train split when omitted")
    instruction: str | None = Field(
        default=None, description="what a decoder is asked to do (system turn of the chat template)")
    prompt: str = Field(default="{text}", description="template of a decoder's user turn; {field}s of an example")
    decoder_eval: Literal["score", "generate"] = Field(
        default="score", description="classification by a decoder: label log-likelihood or free generation")
    max_train_examples: int | None = Field(default=None, gt=0)


class ModelSpec(Strict):
    source: str = Field(description="packaged:<name>, a local Hugging Face folder, or a hub id")
    kind: Literal["causal_lm", "encoder"] | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False


class AlignmentBudget(Strict):
    """Knobs of the preference stages that must be identical across arms."""

    eval_pairs: int = Field(default=64, gt=0, description="held-out pairs of the preference metrics")
    prompts_per_step: int = Field(default=2, gt=0, description="GRPO prompts per step (x group_size samples)")
    max_completion_len: int = Field(default=8, gt=0, description="GRPO sampled completion length")
    temperature: float = Field(default=1.0, gt=0, description="GRPO sampling temperature")


class Budget(Strict):
    """What every training arm consumes, identically. Only lr and method params differ per arm."""

    max_steps: int = Field(default=50, gt=0)
    batch_size: int = Field(default=8, gt=0, description="effective batch, after accumulation")
    grad_accum: int = Field(default=1, gt=0)
    max_seq_len: int = Field(default=128, gt=8)
    seed: int = 0
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_train_tokens: int | None = Field(default=None, gt=0)
    time_limit_s: float | None = Field(default=None, gt=0)
    eval_examples: int | None = Field(default=200, gt=0, description="test items scored per arm")
    eval_batch_size: int = Field(default=16, gt=0)
    latency_examples: int = Field(default=16, ge=0, description="test items timed one at a time")
    max_new_tokens: int = Field(default=16, gt=0)
    seeds: list[int] | None = Field(default=None, min_length=1,
                                    description="run every arm once per seed (mean, std and each seed reported)")
    bootstrap_resamples: int = Field(default=1000, ge=0, description="resamples of the 95% bootstrap CIs (0: none)")
    correction: Literal["holm", "bh", "none"] = Field(
        default="holm", description="correction of the pairwise tests for their number, per task and metric: "
                                    "holm (family-wise error), bh (Benjamini-Hochberg, false discovery rate), none")
    bertscore_model: str | None = Field(default="packaged:minilm-l6",
                                        description="local scorer model of BERTScore (generation); null: off")
    bertscore_layer: int | None = Field(default=None, gt=0, description="its layer; default: next to last")
    forgetting_text: str | None = Field(default="prepared:topics",
                                        description="general text for forgetting (decoders); null: off")
    stage_steps: dict[str, PositiveInt] = Field(default_factory=dict,
                                        description="steps per stage of arms with `stages:` (default max_steps)")
    alignment: AlignmentBudget = Field(default_factory=AlignmentBudget)

    @model_validator(mode="after")
    def _divisible(self):
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        return self


class ArmSpec(Strict):
    method: str
    models: list[str] = Field(description="keys of `models:`; `model: x` is accepted too")
    tasks: list[str] | None = Field(default=None, description="keys of `tasks:`; all tasks when omitted")
    name: str | None = None
    lr: float | None = Field(default=None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)
    stages: list[str | dict[str, dict[str, Any] | None]] | None = Field(
        default=None, description="post-training stages in order, e.g. [sft, {dpo: {beta: 0.1}}]")

    @field_validator("stages")
    @classmethod
    def _one_name_per_stage(cls, value):
        for item in value or []:
            if isinstance(item, dict) and len(item) != 1:
                raise ValueError("a stage is a name or {name: {params}} with exactly one name")
        if value is not None and not value:
            raise ValueError("give at least one stage, or leave `stages:` out")
        return value

    @model_validator(mode="before")
    @classmethod
    def _singular_aliases(cls, data):
        # `model: x` / `task: y` read better in YAML for the common one-model arm.
        if isinstance(data, dict):
            data = dict(data)
            for one, many in (("model", "models"), ("task", "tasks")):
                if one in data:
                    if many in data:
                        raise ValueError(f"give `{one}` or `{many}`, not both")
                    value = data.pop(one)
                    data[many] = value if isinstance(value, list) else [value]
        return data


class TrackingSpec(Strict):
    enabled: bool = True
    uri: str | None = Field(default=None, description="MLflow tracking URI; default sqlite:///mlflow.db")
    experiment_name: str | None = None


class Experiment(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    question: str | None = None
    description: str | None = None
    tasks: dict[str, TaskSpec]
    models: dict[str, ModelSpec]
    budget: Budget = Field(default_factory=Budget)
    arms: list[ArmSpec] = Field(min_length=1)
    golden_sets: list[str] = Field(default_factory=list)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    output_dir: str = "reports"
    # Set by load_experiment, not by the user: where relative paths are resolved from.
    source_file: str | None = Field(default=None, exclude=True)

    @field_validator("tasks", "models")
    @classmethod
    def _not_empty(cls, value):
        if not value:
            raise ValueError("must name at least one entry")
        return value

    @property
    def base_dir(self) -> Path:
        return Path(self.source_file).resolve().parent if self.source_file else Path.cwd()


# ---------------------------------------------------------------- loading with clear errors

def read_yaml_mapping(path: str | Path, *, what: str, keys: str) -> tuple[dict, str]:
    """(parsed mapping, its text) of a YAML file, or one HarnessError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{what} not found: {path}", fix="check the path")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise HarnessError(f"is not valid YAML ({getattr(err, 'problem', err)})", file=str(path),
                           line=mark.line + 1 if mark else None, fix="fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"must be a mapping with {keys}", file=str(path))
    return raw, text


def load_experiment(path: str | Path, overrides: list[str] | None = None, *, check: bool = True) -> Experiment:
    """Read, override (--set), validate and check an experiment file. Raises HarnessError."""
    path = Path(path)
    raw, text = read_yaml_mapping(path, what="experiment file", keys="name, tasks, models, budget and arms")
    for item in overrides or []:
        apply_override(raw, item, file=str(path))
    try:
        experiment = Experiment.model_validate({**raw, "source_file": str(path)})
    except ValidationError as err:
        raise schema_error(err, text, str(path)) from None
    if check:
        from harness.checks import check_experiment  # the world-facing checks (registry, files)

        check_experiment(experiment, lines=KeyLines(text))
    return experiment


def apply_override(raw: dict, item: str, *, file: str) -> None:
    """--set budget.max_steps=10, --set arms.0.lr=1e-4: the value is parsed as YAML."""
    if "=" not in item:
        raise HarnessError(f"--set {item!r} has no '='", fix="write --set key.path=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise HarnessError(f"--set {key}: '{part}' is not an index of a {len(node)}-item list",
                                   file=file, fix="use a number from 0")
            part = int(part)
        elif not isinstance(node, dict):
            raise HarnessError(f"--set {key}: '{'.'.join(parts[:i])}' is not a mapping", file=file)
        if last:
            node[part] = yaml.safe_load(value)
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]


def schema_error(err: ValidationError, text: str, file: str, root: type[BaseModel] | None = None) -> HarnessError:
    """The first pydantic error as one sentence with line, key path and fix. `root` is the
    schema that was validated (Experiment unless said), for did-you-mean on unknown keys."""
    first = err.errors()[0]
    loc = [p for p in first["loc"] if p not in ("function-after", "function-before")]
    key = dotted(loc)
    line = KeyLines(text).line(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_keys(parent, root or Experiment)
        from harness.errors import did_you_mean

        fix = ("remove it, or " + did_you_mean(str(loc[-1]), allowed)) if allowed else "remove it"
        return HarnessError(f"unknown key '{loc[-1]}'", file=file, line=line, key=key, fix=fix)
    if kind == "missing":
        return HarnessError("is required but missing", file=file, line=line, key=key,
                            fix=f"add `{loc[-1]}:`")
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    got_text = f" (got {got!r})" if got is not None and not isinstance(got, (dict, list)) else ""
    return HarnessError(f"{message}{got_text}", file=file, line=line, key=key or None,
                        fix="see the YAML format in README.md")


def dotted(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(parent_loc, root: Any = None) -> list[str]:
    """Field names of the schema model found at a location, for did-you-mean on unknown keys."""
    model: Any = root or Experiment
    for part in parent_loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            # inside a dict[str, Model]: the key is a user name, the model is the value type
            continue
        model = _model_of(field.annotation)
    fields = getattr(model, "model_fields", {})
    return [name for name in fields if name != "source_file"] + (["model", "task"] if model is ArmSpec else [])


def _model_of(annotation):
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


class KeyLines:
    """Maps a key path (('arms', 2, 'method')) to its line in the YAML text, via yaml.compose."""

    def __init__(self, text: str):
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self.root = None

    def line(self, loc) -> int | None:
        node, best = self.root, None
        for part in loc:
            if node is None:
                break
            best = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                match = [(k, v) for k, v in node.value if k.value == str(part)]
                if not match:
                    return best
                best = match[0][0].start_mark.line + 1
                node = match[0][1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                best = node.start_mark.line + 1
            else:
                return best
        return best
