"""The experiment schema (pydantic): structure, types and bounds of every key.

Checks that need the outside world (method registry, files, columns, model kinds) live in
harness.planning.validation; reading YAML with line numbers in harness.config.yamlfile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator


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


class LabelScoring(Strict):
    """How a decoder picks a label (harness/eval/scoring_rule.py; the default is lm-eval's
    multiple_choice `acc`)."""

    end_of_turn: bool = Field(default=False, description="also score the end-of-turn token after the label")
    normalize: Literal["none", "tokens", "chars"] = Field(
        default="none", description="summed log-prob, per token, or per character (lm-eval's acc_norm)"
    )


class TaskSpec(Strict):
    type: Literal["classification", "generation", "token_classification", "extractive_qa"] = "classification"
    data: DataSpec
    labels: list[str] | None = Field(
        default=None,
        description="classification labels (BIO tags for token_classification); read from the train split when omitted",
    )
    instruction: str | None = Field(
        default=None, description="what a decoder is asked to do (system turn of the chat template)"
    )
    prompt: str = Field(default="{text}", description="template of a decoder's user turn; {field}s of an example")
    decoder_eval: Literal["score", "generate"] = Field(
        default="score", description="classification by a decoder: label log-likelihood or free generation"
    )
    label_scoring: LabelScoring = Field(
        default_factory=LabelScoring, description="the scoring rule of `decoder_eval: score` (and golden labels)"
    )
    max_train_examples: int | None = Field(default=None, gt=0)

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value):
        # A repeated label would give the head an output no example ever has.
        if value is not None:
            if not value:
                raise ValueError("give at least one label, or leave `labels:` out to read them from the data")
            seen: set[str] = set()
            for label in value:
                if label in seen:
                    raise ValueError(f"label '{label}' appears twice; list each label once")
                seen.add(label)
        return value


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


GRADE_RUBRIC = (
    "Grade the answer to the question below.\nQuestion: {question}\nReference answer: {reference}\n"
    "Answer to grade: {answer}\nRate its quality, its factual agreement with the reference and its tone "
    "on a scale from 1 (worst) to 10 (best). Reply with the number only."
)
PAIRWISE_PROMPT = (
    "Which answer to the question is better?\nQuestion: {question}\nAnswer A: {answer_a}\nAnswer B: {answer_b}\n"
    "Reply with A, B or tie only."
)


def _placeholders(template: str) -> set[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class JudgeReliability(Strict):
    """When a judge metric is a measurement and when it is withheld (harness.eval.judge_reliability).
    Defaults, argued in docs/judge.md: more than 20% failed items and the judged items are no longer
    the test set; a position consistency of 0.5 is what a judge picking A or B by coin shows, 0.6 is
    the least that is not chance on a few dozen items."""

    max_failure_rate: float = Field(
        default=0.2, ge=0, le=1, description="withhold a judge metric when more of the items than this failed"
    )
    min_position_consistency: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="withhold a pairwise judge metric when the judge gives the same verdict in both orders "
        "on fewer of the items than this (0.5: chance)",
    )


class JudgeSpec(Strict):
    """LLM-as-a-judge of generation tasks (harness.eval.judge): a local model, or an
    OpenAI-compatible endpoint when base_url is given."""

    model: str = Field(description="a local/packaged/hub model, or the model name the endpoint serves")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the API key (never the key)",
    )
    mode: Literal["grade", "pairwise_reference", "pairwise_arms"] = Field(
        default="grade",
        description="1-10 grade on the rubric; answer vs reference in both orders; or arm vs arm in both orders "
        "(run-level, once every arm has finished)",
    )
    vs: str | None = Field(
        default=None, description="pairwise_arms: compare every arm with this arm only (default: every pair)"
    )
    rubric: str = Field(default=GRADE_RUBRIC, description="grade prompt with {question}, {answer}, {reference}")
    pairwise_prompt: str = Field(
        default=PAIRWISE_PROMPT, description="pairwise prompt with {question}, {answer_a}, {answer_b}"
    )
    max_tokens: int = Field(default=8, gt=0, description="tokens the judge may reply with")
    timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="total time one request to an endpoint may take, reply included"
    )
    concurrency: int = Field(default=4, gt=0, le=64, description="requests to an endpoint in flight at once")
    max_response_bytes: int = Field(
        default=1_000_000, ge=1024, le=100_000_000, description="a longer endpoint reply is a failed item"
    )
    reliability: JudgeReliability = Field(default_factory=JudgeReliability)
    calibration: str | None = Field(
        default=None,
        description="a .jsonl golden set with human grades or preferences: the judge's agreement with them "
        "(accuracy, Cohen's kappa) is measured before it judges the arms and recorded with the results",
    )

    @model_validator(mode="after")
    def _templates(self):
        if self.api_key_env and not self.base_url:
            raise ValueError("api_key_env is for an endpoint: give base_url too, or drop api_key_env")
        if self.vs is not None and self.mode != "pairwise_arms":
            raise ValueError("vs is for mode pairwise_arms: set mode: pairwise_arms, or drop vs")
        for key, template, allowed, needed in (
            ("rubric", self.rubric, {"question", "answer", "reference"}, {"answer"}),
            ("pairwise_prompt", self.pairwise_prompt, {"question", "answer_a", "answer_b"}, {"answer_a", "answer_b"}),
        ):
            names = _placeholders(template)
            if names - allowed or needed - names:
                raise ValueError(
                    f"{key} may use {{{'}, {'.join(sorted(allowed))}}} and must use "
                    f"{{{'}, {'.join(sorted(needed))}}}; it uses {sorted(names) or 'none'}"
                )
        return self


class Budget(Strict):
    """What every training arm consumes, identically. Only lr and method params differ per arm.

    After planning, each arm carries its own Budget (its seed, no `seeds`); code reads attributes
    (`budget.max_steps`). Item reads (`budget.max_steps`, `.get`) also work, for plugins written
    against the earlier dict form."""

    def __getitem__(self, key: str):
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in type(self).model_fields else default

    # Upper bounds only keep numbers sane (an index past 2**63 is an OverflowError, not a budget).
    max_steps: int = Field(default=50, gt=0, le=10**9)
    batch_size: int = Field(default=8, gt=0, le=10**6, description="effective batch, after accumulation")
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
    eval_precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="precision of evaluation; auto: bf16 on a CUDA GPU that has it, fp32 on CPUs (measured: "
        "bf16 changed predictions there)",
    )
    seeds: list[int] | None = Field(
        default=None, min_length=1, description="run every arm once per seed (mean, std and each seed reported)"
    )
    bootstrap_resamples: int = Field(default=1000, ge=0, description="resamples of the 95% bootstrap CIs (0: none)")
    correction: Literal["holm", "bh", "none"] = Field(
        default="holm",
        description="correction of the pairwise tests for their number, per task and metric: "
        "holm (family-wise error), bh (Benjamini-Hochberg, false discovery rate), none",
    )
    bertscore_model: str | None = Field(
        default="packaged:minilm-l6", description="local scorer model of BERTScore (generation); null: off"
    )
    bertscore_layer: int | None = Field(default=None, gt=0, description="its layer; default: next to last")
    embedding_model: str | None = Field(
        default="packaged:minilm-l6",
        description="local encoder of embedding_cosine (generation, mean pooling); null: off",
    )
    domain_text: str | None = Field(
        default=None,
        description="held-out domain text of domain_perplexity (decoders): "
        "corpus:<name>, a .txt/.jsonl file or a folder; null: off",
    )
    judge: JudgeSpec | None = Field(default=None, description="LLM-as-a-judge of generation tasks; null: off")
    forgetting_text: str | None = Field(
        default="prepared:topics", description="general text for forgetting (decoders); null: off"
    )
    stage_steps: dict[str, PositiveInt] = Field(
        default_factory=dict, description="steps per stage of arms with `stages:` (default max_steps)"
    )
    alignment: AlignmentBudget = Field(default_factory=AlignmentBudget)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="training precision: mixed (fp32 weights and optimizer state, autocast "
        "forward); auto: bf16 on a CUDA device that supports it, fp32 on CPU",
    )
    devices: int = Field(default=1, gt=0, description="devices ONE arm trains on (torchrun, one process each)")
    strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="with devices > 1: ddp (a full copy per device) or fsdp (a full "
        "fine-tune sharded over the devices)",
    )
    nodes: int = Field(
        default=1,
        gt=0,
        description="machines ONE arm's devices are spread over (Ray only: one torchrun per node); "
        "never changes a result",
    )
    checkpoint_every: int | None = Field(
        default=None,
        ge=0,
        description="optimizer steps between checkpoints inside an arm (0: none); "
        "default: every 10% of steps for arms of more than 200 steps",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="activation checkpointing per transformer block: recompute each block's activations "
        "in the backward pass instead of keeping them (less memory, about a third more compute)",
    )
    dist_timeout_s: float = Field(
        default=300,
        gt=0,
        description="seconds a rank of a multi-device (or FSDP) arm waits in a collective before the "
        "arm fails (a lost or crashed rank stops the others after this, not after NCCL's 10 minutes)",
    )
    save: Literal["none", "full"] = Field(
        default="none",
        description="what a full fine-tune keeps: none, or full (its trained weights as sharded "
        "safetensors loadable by transformers.from_pretrained); adapters are always kept",
    )

    @model_validator(mode="after")
    def _divisible(self):
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        micro = self.batch_size // self.grad_accum
        if micro % self.devices:
            raise ValueError(
                f"a micro-batch of {micro} examples (batch_size / grad_accum) cannot be split "
                f"evenly over {self.devices} devices; make it a multiple of devices"
            )
        return self


class ArmSpec(Strict):
    method: str
    models: list[str] = Field(description="keys of `models:`; `model: x` is accepted too")
    tasks: list[str] | None = Field(default=None, description="keys of `tasks:`; all tasks when omitted")
    name: str | None = None
    lr: float | None = Field(default=None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)
    stages: list[str | dict[str, dict[str, Any] | None]] | None = Field(
        default=None, description="post-training stages in order, e.g. [sft, {dpo: {beta: 0.1}}]"
    )
    devices: int | None = Field(default=None, gt=0, description="devices of this arm (default: budget.devices)")
    strategy: Literal["ddp", "fsdp"] | None = Field(default=None, description="default: budget.strategy")
    nodes: int | None = Field(default=None, gt=0, description="machines of this arm (Ray; default: budget.nodes)")

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


class ExecutorSpec(Strict):
    """How the arms are spread: a local pool of processes, or a Ray cluster (`--executor` etc. override)."""

    name: Literal["local", "ray"] = Field(
        default="local", description="local: processes on this machine; ray: a Ray cluster"
    )
    jobs: int | None = Field(
        default=None, gt=0, description="local: arms at once (default: one per visible GPU, 1 on CPU)"
    )
    address: str | None = Field(
        default=None, description="ray: auto, HOST:PORT of the head node, or none to start Ray on this machine"
    )
    cpus_per_arm: int = Field(
        default=1, gt=0, description="ray: CPUs reserved for (and threads of) each device of an arm"
    )
    max_retries: int = Field(default=2, ge=0, description="ray: reruns of an arm whose worker or node died")
    storage: str | None = Field(
        default=None,
        description="ray: a path every node sees or an object-store URI (s3://, gs://) where arms keep their "
        "checkpoints, so a retry resumes from the newest (an FSDP arm over several nodes needs the path); "
        "default: none, a retry starts at step 0",
    )


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
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
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
