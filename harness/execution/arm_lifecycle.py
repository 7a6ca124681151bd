"""The phases of every arm, written once: load -> measure_before -> wrap -> train -> save ->
evaluate -> golden -> write. A single-task arm and a multi-task arm are two `ArmShape`s of it
(execution.single_task_arm, execution.multi_task_arm): how the model loads, how it trains, which model
answers for a task, and how the results are laid out. Everything else (evaluation in
`budget.eval_precision`, the golden sets, forgetting, costs, provenance) cannot drift between
them, and so every arm really runs the evaluation its hash names (planning.plan)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness import models
from harness.data.task_examples import load_task
from harness.eval import base_cache, precision, predict, profile, quality
from harness.eval.domain import DomainPerplexity
from harness.eval.forgetting import Forgetting
from harness.eval.golden_scoring import score_arm_on_golden_sets
from harness.eval.phases import PhaseClock
from harness.execution.arm_common import arm_summary, emit, seed_everything
from harness.execution.provenance import evaluation_provenance, provenance
from harness.methods import ArmContext, get_method
from harness.planning.plan import Arm
from harness.results.arm_folder import PREDICTIONS, write_predictions
from harness.results.arm_result import ArmResult, now
from harness.training import checkpoint
from harness.training.distributed import is_main_process
from harness.training.fsdp import evaluable
from harness.training.saving import save_full_model


@dataclass
class TaskSplits:
    """One task of the arm as load_task returns it: its train and test examples and the task."""

    train: list[dict]
    test: list[dict]
    task: dict


@dataclass
class Trained:
    """What the train phase leaves: per task key its Consumed and curves; metrics and CIs that
    every task's result carries (preference stages)."""

    consumed: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, dict[str, list]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    ci: dict[str, list] = field(default_factory=dict)


@dataclass
class Evaluated:
    """One task's evaluation: predictions, their costs and conditions, metrics, golden results."""

    rows: list[dict]
    cost: dict
    conditions: dict
    shots: list[dict]
    assessed: Any = None
    golden: dict = field(default_factory=dict)


class ArmShape(Protocol):
    """What differs between a single-task and a multi-task arm; the lifecycle does the rest."""

    kind: str  # the model kind the arm loads: "causal_lm" or "encoder"

    def load_model(self, life: ArmLifecycle, model_dir: Path, tokenizer) -> tuple[Any, ArmContext]:
        """The base model (with a head where the task needs one) and the method's context."""

    def train(self, life: ArmLifecycle) -> Trained:
        """Train the wrapped model `life.model` within the budget (called for methods that train)."""

    def for_task(self, model, key: str):
        """The model that answers for the task `key` (a multi-task model's view of one head)."""

    def write(self, life: ArmLifecycle) -> ArmResult:
        """Write the per-task results and predictions; the ArmResult of OUT_DIR/result.json."""


class ArmLifecycle:
    """One arm inside its process, phase by phase; `run()` calls them in order. Each phase leaves
    what the next ones read as attributes (declared below, in the order they are set)."""

    tasks: dict[str, TaskSplits]  # load
    model_dir: Path
    tokenizer: Any
    model: Any  # the base, then (wrap) the method's model, then (evaluate) cast to eval_precision
    ctx: ArmContext
    load_seconds: float
    identity: dict  # measure_before: the base's identity (base_cache)
    general: Forgetting | None
    domain: DomainPerplexity | None
    untouched_base: bool  # wrap: the model is the base as loaded (golden results shared across arms)
    counts: dict
    trained: Trained  # train
    saved: Path | None  # save
    saved_mb: float
    peaks: dict  # evaluate: peak memory before the scorers

    def __init__(self, arm: Arm, out_dir: Path, shape: ArmShape):
        self.arm, self.out_dir, self.shape = arm, Path(out_dir), shape
        self.started, self.clock, self.memory = now(), PhaseClock(), profile.MemoryProfiler()
        self.method = get_method(arm.method)
        self.base_dir = Path(arm.base_dir)
        self.evaluated: dict[str, Evaluated] = {}

    def run(self) -> ArmResult | None:
        self.load()
        self.measure_before()
        self.wrap()
        self.train()
        if not is_main_process():
            return None  # a multi-device arm: rank 0 evaluates and writes, the other ranks are done
        self.save()
        self.evaluate()
        self.golden()
        return self.write()

    @property
    def kind(self) -> str:
        return self.shape.kind

    @property
    def trains(self) -> bool:
        """Whether anything trains (a method with objective "none", say prompting, does not;
        `validate` refuses stages on such a method)."""
        return self.method.objective_for(self.kind) != "none"

    def load(self) -> None:
        """Every task's examples, then the tokenizer and the base model."""
        emit("phase", phase="data")
        self.clock.start("data")
        self.tasks = {
            key: TaskSplits(*load_task(spec.model_dump(), self.arm.budget)) for key, spec in self.arm.task_specs.items()
        }
        emit("phase", phase="load")
        self.clock.start("load")
        t0 = time.perf_counter()
        self.model_dir = models.resolve_model_dir(self.arm.model.source, base_dir=self.base_dir)
        self.tokenizer = models.load_tokenizer(self.model_dir)
        # A new head (an encoder's classifier) is initialised inside from_pretrained, from torch's
        # global generator, which torch seeds at random in every process: seed it, or the same arm
        # (same hash) trains from a different head each run.
        seed_everything(self.arm.seed)
        self.model, self.ctx = self.shape.load_model(self, self.model_dir, self.tokenizer)
        self.load_seconds = time.perf_counter() - t0

    @property
    def reads_weights(self) -> bool:
        """Whether this process reads the base's weights: all but ranks > 0 of an FSDP arm, which
        receive their shards from rank 0 (harness.training.fsdp) and build the model on meta."""
        return is_main_process() or self.arm.budget.strategy != "fsdp"

    def measure_before(self) -> None:
        """The untouched base on general and domain text (decoders; forgetting and domain perplexity).
        Rank 0 alone: it alone evaluates, and another rank's model may hold no weights yet."""
        self.clock.start("forgetting_before")
        if not is_main_process():
            self.identity, self.general, self.domain = {}, None, None
            return
        self.identity = base_cache.model_identity(
            self.arm.model.source, self.model_dir, self.model, base_dir=self.base_dir, precision="fp32"
        )
        budget = self.arm.budget
        self.general = Forgetting.measure_before(
            self.model,
            self.tokenizer,
            kind=self.kind,
            budget=budget,
            base_dir=self.base_dir,
            trained=self.trains,
            model_identity=self.identity,
        )
        self.domain = DomainPerplexity.measure_before(
            self.model, self.tokenizer, kind=self.kind, budget=budget, base_dir=self.base_dir
        )

    def wrap(self) -> None:
        """The method's wrapping (adapters, frozen parts), initialised from the arm's seed."""
        self.clock.start("load")
        t0 = time.perf_counter()
        seed_everything(self.arm.seed)  # adapter and head initialisation: the same for every arm
        if not self.trains:
            for p in self.model.parameters():
                p.requires_grad_(False)
        loaded = self.model
        self.model = self.method.wrap(self.model, self.arm.params, self.ctx)
        self.untouched_base = not self.trains and self.model is loaded  # golden results shareable across arms
        self.load_seconds += time.perf_counter() - t0
        self.counts = profile.parameter_counts(self.model)

    def train(self) -> None:
        self.clock.start("train")
        seed_everything(self.arm.seed)  # dropout masks: the same stream for every arm
        self.trained = self.shape.train(self) if self.trains else Trained()
        self.model = evaluable(self.model)  # an FSDP-trained model: its plain copy, gathered to rank 0

    def save(self) -> None:
        """What was trained, in the precision it trained in, and forgetting measured on it; both
        before evaluation casts the model to budget.eval_precision."""
        self.model.eval()
        self.clock.start("save")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "adapter"
        self.saved = path if self.trains and self.method.save(self.model, path) else None
        if self.trains and self.saved is None and self.arm.budget.save == "full":
            self.saved = save_full_model(self.model, self.tokenizer, self.out_dir)  # a full fine-tune, when asked
        self.saved_mb = profile.saved_mb(self.model, self.saved, trained=self.trains)
        if self.general is not None:
            self.clock.start("forgetting_after")
            self.general.measure_after(self.model, self.tokenizer)

    def evaluate(self) -> None:
        """Every task's test set in budget.eval_precision, then its metrics (costs are measured
        before the scorers: BERTScore loads a model of its own)."""
        self.model = precision.for_evaluation(self.model, self.arm.budget.eval_precision)
        budget = self.arm.budget
        for key, splits in self.tasks.items():
            emit("phase", phase="eval" if len(self.tasks) == 1 else f"eval {key}", total=len(splits.test))
            shots = self.method.shots(self.arm.params, splits.train, self.ctx)
            predictor = predict.make_predictor(
                self.shape.for_task(self.model, key),
                self.tokenizer,
                kind=self.kind,
                task=splits.task,
                budget=budget,
                shots=shots,
            )
            rows, cost, conditions = predict.run_predictions(
                predictor,
                splits.test,
                splits.task,
                batch_size=budget.eval_batch_size,
                latency_examples=budget.latency_examples,
                on_batch=lambda done, total: emit("eval", done=done, total=total),
                clock=self.clock,
            )
            self.evaluated[key] = Evaluated(rows, cost, conditions, shots)
        self.peaks = self.memory.peaks_mb()
        self.clock.start("quality")
        for key, done in self.evaluated.items():
            splits = self.tasks[key]
            done.assessed = quality.assess_arm(
                done.rows,
                splits.test,
                splits.task,
                self.arm,
                model=self.shape.for_task(self.model, key),
                tokenizer=self.tokenizer,
                kind=self.kind,
                shots=done.shots,
                general=self.general,
                domain=self.domain,
                trained=self.trains,
            )

    def golden(self) -> None:
        """Every golden set of the experiment, on the model that answers for each task."""
        emit("phase", phase="golden")
        self.clock.start("golden")
        for key, done in self.evaluated.items():
            done.golden = score_arm_on_golden_sets(
                self.arm,
                self.shape.for_task(self.model, key),
                self.tokenizer,
                kind=self.kind,
                task=self.tasks[key].task,
                base_identity=self.identity if self.untouched_base else None,
            )

    def write(self) -> ArmResult:
        self.clock.start("save")
        checkpoint.discard(self.out_dir / checkpoint.FOLDER)  # finished: the result is what a rerun reuses
        return self.shape.write(self)

    # ---------------------------------------------------------------- what the shapes write

    @property
    def train_seconds(self) -> float | None:
        consumed = self.trained.consumed.values()
        return round(sum(c.seconds for c in consumed), 3) if consumed else None

    def shared_costs(self) -> dict:
        """Costs of the whole arm (a multi-task arm's tasks share them)."""
        return {
            **self.peaks,
            **self.counts,
            "load_seconds": round(self.load_seconds, 3),
            "saved_mb": self.saved_mb,
            "train_seconds": self.train_seconds,
        }

    def task_result(self, key: str, summary: dict | None = None) -> ArmResult:
        """One task's ArmResult (predictions.jsonl beside it)."""
        done, task = self.evaluated[key], self.tasks[key].task
        consumed = self.trained.consumed.get(key)
        tokens_per_s = round(consumed.tokens / consumed.seconds, 2) if consumed and consumed.seconds else None
        return ArmResult(
            arm=summary or arm_summary(self.arm),
            status="ok",
            consumed=consumed.to_dict() if consumed else None,
            metrics={
                **done.assessed.metrics,
                **self.trained.metrics,
                **self.shared_costs(),
                **done.cost,
                "train_tokens_per_s": tokens_per_s,
            },
            ci={**done.assessed.ci, **self.trained.ci},
            metrics_detail={
                **done.assessed.detail,
                "cost_conditions": done.conditions,
                "phase_seconds": self.clock.breakdown(),
            },
            curves=self.trained.curves.get(key, {}),
            provenance={
                **provenance(self.model_dir, task),
                **evaluation_provenance(self.kind, task, self.arm.budget.eval_precision),
            },
            artifacts={"predictions": PREDICTIONS},
            started_at=self.started,
            finished_at=now(),
            golden=done.golden,
        )

    def write_predictions(self, key: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_predictions(folder, self.evaluated[key].rows)
