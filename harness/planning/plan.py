"""Experiment -> [Arm]: one arm per method x model x task, each with a content hash.

The hash covers everything that changes the result (method, resolved params, model identity,
task and data identity, budget, seed), so a rerun can reuse a completed arm with the same hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from harness import models
from harness.config.schema import Budget, Experiment, ModelSpec, TaskSpec
from harness.data import loaders
from harness.eval import precision
from harness.eval.scoring_rule import ScoringRule, decides_arm
from harness.methods import get_method
from harness.naming import seed_name
from harness.planning.validation import UNSHARDED_METHODS
from harness.plugins import Params
from harness.stages import normalize_stages
from harness.stages.rewards import arm_references

HASH_VERSION = 2  # bump when the meaning of a result changes, to invalidate old results
# 2: encoder heads are initialised from the arm's seed (before, from a per-process random seed)


# What an arm spanning tasks has as its task in its hash (it has no TaskSpec of its own: `tasks`).
SPANNING_TASKS = {"type": "multi_task", "data": {}}


@dataclass(frozen=True)
class Arm:
    """One arm, typed: the method's validated Params (methods read `params.r`), the model and
    task specs of the experiment schema, its own Budget. `to_dict`/`from_dict` are the one
    serialisation (arm.json, which the arm's process and a Ray worker read)."""

    name: str
    method: str
    params: Params  # the method's Params, validated, defaults filled in
    model_key: str
    model: ModelSpec  # with `kind` resolved
    task_key: str
    task: TaskSpec | None  # file paths made absolute; None for an arm spanning tasks (`tasks`)
    budget: Budget  # the arm's own: its seed, no `seeds`
    seed: int
    base_dir: str
    hash: str = field(default="")
    golden_sets: list[str] = field(default_factory=list)  # absolute paths; every arm is scored on them
    tasks: dict[str, TaskSpec] = field(default_factory=dict)  # an arm spanning tasks (multi_task): {key: task}
    stages: list[dict] = field(default_factory=list)  # [{name, params}] resolved; empty: the method's objective

    @property
    def task_specs(self) -> dict[str, TaskSpec]:
        """Every task the arm trains and is evaluated on, by key: its own, or the tasks it spans."""
        return self.tasks or {self.task_key: self.task}

    @property
    def task_type(self) -> str:
        """The task type a method sees (ArmContext.task_type): "multi_task" for an arm spanning tasks."""
        return self.task.type if self.task is not None else SPANNING_TASKS["type"]

    @property
    def devices(self) -> int:
        """Devices this arm trains on, all at once (budget.devices, or the arm's own `devices:`):
        an executor's unit of placement. k > 1 runs the arm under torchrun (execution.launch)."""
        return self.budget.devices

    @property
    def slug(self) -> str:
        stages = "+".join(s["name"] for s in self.stages) + "-" if self.stages else ""
        safe = "".join(
            c if c.isalnum() or c in "-_." else "-" for c in f"{stages}{self.method}-{self.model_key}-{self.task_key}"
        )
        return f"{safe}-{self.hash[:8]}"

    def to_dict(self) -> dict:
        """The arm as JSON data; from_dict reads it back to the same typed Arm."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {
            "params": self.params.model_dump(mode="json"),
            "model": self.model.model_dump(mode="json"),
            "task": self.task.model_dump(mode="json") if self.task is not None else None,
            "tasks": {key: task.model_dump(mode="json") for key, task in self.tasks.items()},
            "budget": self.budget.model_dump(mode="json"),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Arm":
        return cls(
            **{
                **data,
                "params": get_method(data["method"]).Params.model_validate(data["params"]),
                "model": ModelSpec.model_validate(data["model"]),
                # an arm spanning tasks has none of its own (older arm.json files: SPANNING_TASKS)
                "task": TaskSpec.model_validate(data["task"]) if data.get("task") and not data.get("tasks") else None,
                "tasks": {key: TaskSpec.model_validate(task) for key, task in (data.get("tasks") or {}).items()},
                "budget": Budget.model_validate(data["budget"]),
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Arm":
        return cls.from_dict(json.loads(text))


def resolved_params(method, arm_spec, tasks: list[str] | None = None) -> Params:
    """The arm's params validated by the method's Params model, defaults filled in: what the
    method reads (typed), and, as JSON, what enters the arm's hash."""
    given = {**arm_spec.params, **({"lr": arm_spec.lr} if arm_spec.lr is not None else {})}
    return method.Params.model_validate(given, context={"tasks": tasks})


def _absolute_task(task: TaskSpec, base_dir: Path) -> TaskSpec:
    data = task.data
    absolute = {
        split: str((base_dir / getattr(data, split)).resolve())
        for split in ("train", "validation", "test", "preference", "preference_test")
        if getattr(data, split)
    }
    return task.model_copy(update={"data": data.model_copy(update=absolute)})


def data_identity(task: dict) -> str:
    """Identity of the task's data: the prepared name, or a hash of the files' contents."""

    data = task["data"]
    if data.get("prepared"):
        identity = f"prepared:{data['prepared']}"
    else:
        identity = loaders.fingerprint_files([Path(data[s]) for s in ("train", "validation", "test") if data.get(s)])
    pairs = [Path(data[s]) for s in ("preference", "preference_test") if data.get(s)]  # a user's preference pairs
    return identity + (":" + loaders.fingerprint_files(pairs) if pairs else "")


def plan(exp: Experiment) -> list[Arm]:
    arms: list[Arm] = []
    named: dict[str, list[Arm]] = {}  # an arm's `name:` -> its arms so far (a reward model's users look here)
    base = exp.base_dir
    for spec in exp.arms:
        method = get_method(spec.method)
        params = resolved_params(method, spec, spec.tasks or list(exp.tasks))
        stages = arm_stages(spec)
        for model_key in spec.models:
            model_spec = exp.models[model_key]
            kind = model_spec.kind or models.infer_kind(model_spec.source, base_dir=base)
            model = model_spec.model_copy(update={"kind": kind})
            for task_key, task, tasks in _task_groups(exp, spec, method, base):
                # budget.seeds: one arm per seed, the seed in its name, budget (so its hash) and run.
                for seed in exp.budget.seeds or [exp.budget.seed]:
                    name = spec.name or stage_prefix(stages) + f"{spec.method} · {model_key}"
                    if len(exp.tasks) > 1 and not spec.name:
                        name += f" · {task_key}"
                    if exp.budget.seeds:
                        name = seed_name(name, seed)
                    arm = Arm(
                        name=name,
                        method=spec.method,
                        params=params,
                        model_key=model_key,
                        model=model,
                        task_key=task_key,
                        task=task,
                        seed=seed,
                        budget=_arm_budget(exp, seed, stages, spec, trains=_trains(method, kind, stages)),
                        base_dir=str(base),
                        golden_sets=[str((base / g).resolve()) for g in exp.golden_sets],
                        tasks=tasks,
                        stages=link_arm_outputs(stages, named, arm_key=(task_key, seed, model_key), base=base),
                    )
                    arms.append(replace(arm, hash=_content_hash(arm, model_spec.source, base)))
                    if spec.name:
                        named.setdefault(spec.name, []).append(arms[-1])
    _dedupe_names(arms)
    return arms


def _task_groups(exp: Experiment, spec, method, base: Path):
    """(task key, task, tasks) per arm of a spec: one per task, or, for a method that spans tasks
    (`spans_tasks = True`, e.g. multi_task), one arm over all its tasks, keyed "a+b+c"."""
    keys = spec.tasks or list(exp.tasks)
    tasks = {key: _absolute_task(exp.tasks[key], base) for key in keys}
    if not getattr(method, "spans_tasks", False):
        return [(key, task, {}) for key, task in tasks.items()]
    return [("+".join(keys), None, tasks)]


def _trains(method, kind: str, stages: list) -> bool:
    return bool(stages) or method.objective_for(kind) != "none"


def _arm_budget(exp: Experiment, seed: int, stages: list | None = None, spec=None, trains: bool = True) -> Budget:
    """The budget one arm runs under: its own seed; the list of seeds is the plan's business, so
    adding a seed later keeps the arms of the others (and their hashes). Only the arm's own
    stages keep their stage_steps. An arm's own `devices:`/`strategy:`/`nodes:` override the budget's; an
    arm that trains nothing has nothing to spread and takes one device."""
    names = {s["name"] for s in stages or []}
    update = {
        "seeds": None,
        "seed": seed,
        "stage_steps": {k: v for k, v in exp.budget.stage_steps.items() if k in names},
        "eval_precision": precision.resolve(exp.budget.eval_precision),
    }  # auto: this machine's choice
    for key in ("devices", "strategy", "nodes"):
        if spec is not None and getattr(spec, key) is not None:
            update[key] = getattr(spec, key)
    if not trains:
        update["devices"], update["nodes"] = 1, 1
    if not trains or stages or (spec is not None and spec.method in UNSHARDED_METHODS):
        update["strategy"] = "ddp"  # a budget-wide fsdp: these arms are not sharded (checks refuses it per arm)
    return exp.budget.model_copy(update=update)


# Budget keys added after results existed, left out of the hash at their default so earlier arms
# keep their hashes (and are reused). correction re-tests, never retrains; checkpoint_every
# and nodes (where the devices sit) never change a result: all always left out.
_NEUTRAL_AT = {"precision": "auto", "devices": 1, "strategy": "ddp", "gradient_checkpointing": False, "save": "none"}
_NEVER_HASHED = {"seeds", "correction", "checkpoint_every", "dist_timeout_s", "nodes"}


def budget_identity(budget: Budget, stages: list | None) -> dict:
    """What of the budget enters an arm's hash: all of it but `seeds`, `correction`,
    `checkpoint_every` and `dist_timeout_s`; the training-precision, device, activation-checkpointing
    and save keys only away from their defaults;
    the stage budgets only for arms with stages (so adding a DPO arm keeps every other arm's hash)."""
    identity = {
        k: v
        for k, v in budget.model_dump(mode="json", exclude=_NEVER_HASHED).items()
        if not (k in _NEUTRAL_AT and v == _NEUTRAL_AT[k])
    }
    if not stages:
        identity.pop("stage_steps")
        identity.pop("alignment")
    if identity.get("judge"):
        from harness.eval.judge import arm_identity

        identity["judge"] = arm_identity(identity["judge"])  # what of the judge an arm's own result depends on
    if identity.get("eval_precision") == "fp32":
        identity.pop("eval_precision")  # what every result before this setting was: those keep their hash
    return identity


def arm_stages(spec) -> list[dict]:
    """The arm's stages resolved with each stage's defaults (harness.stages)."""

    return normalize_stages(spec.stages)


def link_arm_outputs(stages: list[dict], named: dict[str, list[Arm]], *, arm_key: tuple, base: Path) -> list[dict]:
    """A reward that names an earlier arm (`{reward_model: rm}`, rm being that arm's `name:`) gets
    the folder of the arm with the same task and seed (and model, when it has several): `arm` in
    its params, so the producer's hash enters this arm's hash and the runner runs it first. A name
    that is no arm's is a path, made absolute. `harness validate` has checked both."""
    task_key, seed, model_key = arm_key
    linked = json.loads(json.dumps(stages))  # a copy per arm: each seed links its own producer
    for params, key in arm_references(linked):
        candidates = [a for a in named.get(params[key], []) if (a.task_key, a.seed) == (task_key, seed)]
        producer = next((a for a in candidates if a.model_key == model_key), candidates[0] if candidates else None)
        if producer is not None:
            params["arm"] = producer.slug
        else:
            params[key] = str((base / params[key]).resolve())
    return linked


def stage_prefix(stages: list[dict]) -> str:
    """'sft+dpo ' in front of an arm's display name; nothing for an arm without stages."""
    return "+".join(s["name"] for s in stages) + " " if stages else ""


def _content_hash(arm: Arm, source: str, base: Path) -> str:
    # The specs as the plain data they were hashed as before Arm was typed, so hashes stay the same.
    task = arm.task.model_dump() if arm.task is not None else SPANNING_TASKS
    identity = {
        "v": HASH_VERSION,
        "method": arm.method,
        "params": arm.params.model_dump(mode="json"),
        "model": models.model_fingerprint(source, base_dir=base),
        "model_options": arm.model.model_dump(include={"dtype", "kind", "trust_remote_code"}),
        "task": _task_identity(task),
        "data": data_identity(task),
        "columns": task["data"].get("columns"),
        "budget": budget_identity(arm.budget, arm.stages),
    }
    if arm.tasks:  # an arm spanning tasks: each task's spec and data identity
        spanned = {key: t.model_dump() for key, t in arm.tasks.items()}
        identity["tasks"] = {
            key: [_task_identity(t), data_identity(t), t["data"].get("columns")] for key, t in spanned.items()
        }
    if decides_arm(arm.model.kind, task, bool(arm.golden_sets)):  # decoder label scoring only
        identity["label_scoring"] = ScoringRule.of_task(task).as_dict()
    if arm.stages:  # only arms with stages: the hashes of all other arms stay as they were
        identity["stages"] = arm.stages
    if arm.golden_sets:  # golden results are part of an arm's result: rescore when a set changes
        identity["golden"] = [hashlib.sha256(Path(g).read_bytes()).hexdigest() for g in arm.golden_sets]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _task_identity(task: dict) -> dict:
    # The scoring rule enters only the hashes of arms it can change (decides_arm), so adding it
    # to the schema kept every other arm's hash.
    return {k: v for k, v in task.items() if k not in ("data", "label_scoring")}


def _dedupe_names(arms: list[Arm]) -> None:
    """Two arms with the same display name (say two LoRA ranks) get their params appended."""
    seen: dict[str, int] = {}
    for arm in arms:
        seen[arm.name] = seen.get(arm.name, 0) + 1
    stage_text = [_stage_params_text(arm, arms) for arm in arms]  # from the names before any renaming
    for i, arm in enumerate(arms):
        if seen[arm.name] > 1:
            extra = ", ".join(f"{k}={v}" for k, v in sorted(arm.params.model_dump(mode="json").items())) + stage_text[i]
            object.__setattr__(arms[i], "name", f"{arm.name} ({extra})")


def _stage_params_text(arm: Arm, arms: list[Arm]) -> str:
    """The stage params in which arms of the same display name differ ('; dpo.beta=0.5')."""

    def flat(a: Arm) -> dict:
        return {f"{s['name']}.{k}": v for s in a.stages for k, v in s["params"].items()}

    mine = flat(arm)
    others = [flat(a) for a in arms if a.name == arm.name and a is not arm]
    differing = [k for k in sorted(mine) if any(o.get(k) != mine[k] for o in others)]
    return "".join(f"; {k}={mine[k]}" for k in differing)
