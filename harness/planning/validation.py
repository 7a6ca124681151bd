"""Checks of an experiment against the world: method registry, model sources, data files and
columns. Each failure is one HarnessError naming file, line, key path and fix."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from harness import models
from harness.config.golden_set import load_golden
from harness.config.schema import Experiment
from harness.config.yamlfile import KeyLines, dotted, schema_error
from harness.data import loaders, prepared
from harness.data.preference import PAIR_FIELDS
from harness.errors import HarnessError, did_you_mean
from harness.methods import get_method
from harness.stages import get_stage, stage_entry, stage_names
from harness.tasks import task_type


def check_experiment(exp: Experiment, *, lines: KeyLines | None = None, sources: bool = True) -> None:
    """Everything that can be checked without training. `sources=False` skips whether each model
    can be loaded here (`harness plan` estimates hub models offline from their configs)."""
    file = exp.source_file
    lines = lines or KeyLines(Path(file).read_text() if file else "")

    def fail(loc: tuple, message: str, fix: str | None = None):
        raise HarnessError(message, file=file, line=lines.line(loc), key=dotted(loc), fix=fix)

    kinds = {key: _model_kind(exp, key, spec, fail, sources) for key, spec in exp.models.items()}
    decoder_tasks = {
        t for arm in exp.arms for t in (arm.tasks or exp.tasks) if any(kinds.get(m) == "causal_lm" for m in arm.models)
    }
    for key, task in exp.tasks.items():
        _check_task(exp, key, task, fail, decoder=key in decoder_tasks)
        _check_preference_files(exp, key, task, fail)
    for i, arm in enumerate(exp.arms):
        _check_arm(exp, i, arm, kinds, fail, lines, file)
        _check_stages(i, arm, kinds, fail, lines, file)
        _check_arm_outputs(exp, i, arm, fail)
    _check_stage_budget(exp, fail)
    if exp.budget.domain_text:
        from harness.data.corpus import source_problem

        found = source_problem(exp.budget.domain_text, exp.base_dir)
        if found:
            fail(("budget", "domain_text"), *found)
    judge = exp.budget.judge
    if judge and judge.api_key_env and not os.environ.get(judge.api_key_env):
        fail(
            ("budget", "judge", "api_key_env"),
            f"the environment variable {judge.api_key_env} is not set",
            f"export {judge.api_key_env}=<your key> before the run (the key itself never goes in the YAML)",
        )
    if judge and judge.calibration and not (exp.base_dir / judge.calibration).is_file():
        fail(
            ("budget", "judge", "calibration"),
            f"judge calibration set not found: {judge.calibration}",
            "give a .jsonl file of human-labelled items; paths are relative to the experiment file",
        )
    for i, golden in enumerate(exp.golden_sets):
        if not (exp.base_dir / golden).is_file():
            fail(("golden_sets", i), f"golden set not found: {golden}", "paths are relative to the experiment file")

        load_golden(exp.base_dir / golden)  # its own schema errors name the golden file


def _model_kind(exp, key, spec, fail, sources: bool = True) -> str:
    if spec.source.startswith("packaged:"):
        name = spec.source.split(":", 1)[1]
        if name not in models.PACKAGED:
            fail(("models", key, "source"), f"unknown packaged model '{name}'", did_you_mean(name, models.PACKAGED))
        from harness.models.packaged import packaged_problem

        damage = packaged_problem(name)
        if damage:
            fail(("models", key, "source"), damage)
    elif sources:
        problem = models.source_problem(spec.source, base_dir=exp.base_dir)
        if problem:
            fail(("models", key, "source"), problem[0], problem[1])
    kind = spec.kind or models.infer_kind(spec.source, base_dir=exp.base_dir)
    if kind is None:
        fail(
            ("models", key, "kind"),
            f"cannot tell whether '{spec.source}' is a decoder or an encoder",
            "add `kind: causal_lm` or `kind: encoder`",
        )
    return kind


def _existing_file_columns(exp, loc, rel: str, fmt, what: str, fail):
    """(path, its columns) of a file named relative to the experiment; fails when it is missing."""

    path = exp.base_dir / rel
    if not path.is_file():
        fail(loc, f"{what} file not found: {path}", "paths are relative to the experiment file")
    try:
        loaders.format_of(path, fmt)
    except HarnessError as err:  # the key is at fault (a suffix we cannot read), not the file
        fail(loc, err.bare, err.fix)
    columns = loaders.peek_columns(path, fmt=fmt)
    if not columns:
        fail(loc, f"{what} file {path.name} has no rows", "give it at least one example")
    return path, columns


def _check_task(exp, key, task, fail, *, decoder: bool) -> None:
    """The task's data files, read in full once (streamed, row by row): they exist and parse, have
    the columns, rows and labels the task needs, and the prompt names only fields they have."""
    data = task.data
    required = task_type(task.type).fields
    if data.prepared is not None:
        if data.prepared not in prepared.PREPARED:
            fail(
                ("tasks", key, "data", "prepared"),
                f"unknown prepared dataset '{data.prepared}'",
                did_you_mean(data.prepared, prepared.PREPARED),
            )
        try:  # a prepared set not built yet is built by the run; nothing to read here
            folder = prepared.prepared_dir(data.prepared, prepare_if_missing=False)
        except HarnessError:
            return
        if decoder:
            _check_prompt_fields(task, key, _first_row(folder / "train.jsonl"), "train.jsonl", fail)
        return
    seen_labels: dict[str, tuple[str, int]] = {}  # label -> (file, row) where first seen
    for split in ("train", "validation", "test"):
        rel = getattr(data, split)
        if rel is None:
            continue
        path, columns = _existing_file_columns(exp, ("tasks", key, "data", split), rel, data.format, "data", fail)
        for field in required:
            column = data.columns.get(field, field)
            if column not in columns:
                loc = ("tasks", key, "data", "columns", field) if field in data.columns else ("tasks", key, "data")
                fail(
                    loc,
                    f"column '{column}' (the {field}) is not in {path.name}, which has: {', '.join(columns)}",
                    f"map it with `columns: {{{field}: <column>}}`; " + did_you_mean(column, columns),
                )
        count = _scan_rows(path, task, key, split, required, seen_labels, fail, decoder=decoder)
        if count == 0:
            fail(("tasks", key, "data", split), f"data file {path.name} has no rows", "give it at least one example")
    _check_labels_cover(task, key, seen_labels, fail)


def _scan_rows(path, task, key, split, required, seen_labels, fail, *, decoder: bool) -> int:
    from harness.data import loaders

    count = 0
    for count, row in enumerate(
        loaders.iter_examples(path, task.data.columns, fmt=task.data.format, required=required), start=1
    ):
        if count == 1 and decoder:
            _check_prompt_fields(task, key, row, path.name, fail)
        if task.type == "classification":
            seen_labels.setdefault(row["label"], (path.name, count - 1))
        elif task.type == "token_classification":
            tokens, tags = row["tokens"], row["tags"]
            if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
                fail(
                    ("tasks", key, "data", split),
                    f"row {count - 1} of {path.name} needs `tokens` and `tags` as lists of the same length",
                    "give one tag per token",
                )
            for tag in tags:
                seen_labels.setdefault(str(tag), (path.name, count - 1))
    return count


def _check_labels_cover(task, key, seen_labels, fail) -> None:
    """Every label the data uses must be one of `labels:` (a head has one output per label)."""
    if task.type not in ("classification", "token_classification") or not task.labels:
        return
    for label, (name, row) in seen_labels.items():
        if label not in task.labels:
            fail(
                ("tasks", key, "labels"),
                f"row {row} of {name} has label '{label}', which is not in labels [{', '.join(task.labels)}]",
                "add it to `labels:`, or correct the row",
            )


def _first_row(path: Path) -> dict | None:
    from harness.data import loaders

    try:
        return next(iter(loaders.iter_examples(path, required=())), None)
    except HarnessError:
        return None


def _check_prompt_fields(task, key, row: dict | None, name: str, fail) -> None:
    """A decoder's prompt template may only name fields the examples have."""
    import string

    if row is None:
        return
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(task.prompt) if f is not None]
    except ValueError as err:
        fail(
            ("tasks", key, "prompt"),
            f"is not a valid template ({err})",
            "write fields as {text}; a literal brace as {{",
        )
    for field in fields:
        if not field or not field.isidentifier():
            fail(
                ("tasks", key, "prompt"),
                f"names the field '{{{field}}}', which is not a plain field name",
                "write fields as {text}; a literal brace as {{",
            )
        if field not in row:
            fail(
                ("tasks", key, "prompt"),
                f"names the field '{{{field}}}', which the rows of {name} lack "
                f"(they have: {', '.join(sorted(k for k in row if k != 'id'))})",
                did_you_mean(field, row),
            )


def _check_arm(exp, i, arm, kinds, fail, lines, file) -> None:
    try:
        method = get_method(arm.method)
    except HarnessError as err:
        fail(("arms", i, "method"), err.bare, err.fix)
    for j, model in enumerate(arm.models):
        if model not in exp.models:
            fail(("arms", i, "model"), f"unknown model '{model}'", did_you_mean(model, exp.models))
        if kinds[model] not in method.applies_to:
            fail(
                ("arms", i, "method"),
                f"method '{arm.method}' does not apply to '{model}' (a {kinds[model]})",
                f"it applies to: {', '.join(sorted(method.applies_to))}",
            )
    for task in arm.tasks or []:
        if task not in exp.tasks:
            fail(("arms", i, "task"), f"unknown task '{task}'", did_you_mean(task, exp.tasks))
    accepted = set(method.Params.model_fields)
    if arm.lr is not None and "lr" not in accepted:
        fail(("arms", i, "lr"), f"method '{arm.method}' trains nothing, so it takes no learning rate", "remove `lr:`")
    if not accepted and arm.params:
        fail(("arms", i, "params"), f"method '{arm.method}' takes no parameters", "remove `params:`")
    check_params(
        method.Params,
        arm.params,
        ("arms", i, "params"),
        lines,
        file,
        context={"tasks": arm.tasks or list(exp.tasks), "kind": kinds.get(arm.models[0])},
    )
    _check_devices(exp, i, arm, fail)


# Methods whose model FSDP does not shard: a 4-bit base (bitsandbytes) and the shared-encoder model.
UNSHARDED_METHODS = ("qlora", "multi_task")


def _check_devices(exp, i, arm, fail) -> None:
    """One arm across devices: the micro-batch splits evenly, stages stay on one device, an arm's
    own `strategy: fsdp` names a method FSDP can shard."""
    budget = exp.budget
    devices = arm.devices or budget.devices
    where = ("arms", i, "devices") if arm.devices else ("budget", "devices")
    micro = budget.batch_size // budget.grad_accum
    if micro % devices:
        fail(
            where,
            f"a micro-batch of {micro} examples (budget.batch_size / grad_accum) cannot be split evenly "
            f"over {devices} devices",
            f"make batch_size / grad_accum a multiple of {devices}",
        )
    if devices > 1 and arm.stages:
        fail(where, "arms with `stages:` train on one device", "set `devices: 1` on this arm")
    if arm.strategy == "fsdp" and arm.method in UNSHARDED_METHODS:  # budget-wide fsdp leaves them on ddp
        fail(
            ("arms", i, "strategy"),
            f"method '{arm.method}' does not train under FSDP (a 4-bit or shared-encoder model is not sharded)",
            "use `strategy: ddp` for this arm: each device holds a copy and only gradients are exchanged",
        )


def _check_stages(i, arm, kinds, fail, lines, file) -> None:
    """Stage names (did you mean), their params, and the model kinds they apply to."""
    if not arm.stages:
        return
    if get_method(arm.method).objective_for(kinds[arm.models[0]]) == "none":
        fail(
            ("arms", i, "stages"),
            f"method '{arm.method}' trains nothing, so it cannot run stages",
            "use a trainable method (lora, qlora, full_ft, ...)",
        )
    for j, item in enumerate(arm.stages):
        name, params = stage_entry(item)
        try:
            stage = get_stage(name)
        except HarnessError as err:
            fail(("arms", i, "stages", j), err.bare, err.fix)
        check_params(stage.Params, params, ("arms", i, "stages", j, name), lines, file, listing="harness stages")
        found = stage.problem(params or {}, Path(file).resolve().parent if file else Path.cwd())
        if found:
            fail(("arms", i, "stages", j, name, found[0]), found[1], found[2])
        for model in arm.models:
            if kinds.get(model) not in stage.applies_to:
                fail(
                    ("arms", i, "stages", j),
                    f"stage '{name}' does not apply to '{model}' (a {kinds.get(model)})",
                    f"it applies to: {', '.join(sorted(stage.applies_to))}",
                )


def _check_arm_outputs(exp, i, arm, fail) -> None:
    """A reward that reads another arm's output (`{reward_model: rm}`) names an EARLIER arm's
    `name:` that has the stage producing it, or a saved folder: the runner runs an arm after the
    arms it names, so naming only earlier arms keeps the order obvious and free of cycles."""
    from harness.stages.rewards import REWARDS, reward_spec

    for j, item in enumerate(arm.stages or []):
        stage, params = stage_entry(item)
        for k, entry in enumerate((params or {}).get("rewards") or []):
            name, given = reward_spec(entry)
            key = REWARDS.get(name).arm_param
            if not key or not isinstance(given.get(key), str):
                continue
            value, loc = given[key], ("arms", i, "stages", j, stage, "rewards", k, name)
            later = [n for n, a in enumerate(exp.arms) if a.name == value and n >= i]
            earlier = [a for a in exp.arms[:i] if a.name == value]
            if earlier and not any(_has_stage(a, name) for a in earlier):
                fail(loc, f"arm '{value}' has no {name} stage", f"add `{name}` to the stages of arm '{value}'")
            if not earlier and later:
                fail(loc, f"arm '{value}' comes at or after this arm", f"move arm '{value}' before the arms using it")
            if not earlier and not (exp.base_dir / value / "config.json").is_file():
                fail(
                    loc,
                    f"no earlier arm is named '{value}' and no saved {name} folder is at {exp.base_dir / value}",
                    f"give an earlier arm with a {name} stage `name: {value}`, or the path of a saved {name} folder",
                )
            problem = None if earlier else REWARDS.get(name).folder_problem(exp.base_dir / value)
            if problem:
                fail(loc, problem, f"give the path of a {name} folder a {name} stage saved, or an earlier arm's name")


def _has_stage(arm, name: str) -> bool:
    return any(stage_entry(s)[0] == name for s in arm.stages or [])


def check_params(
    model: type[BaseModel],
    params: dict | None,
    loc: tuple,
    lines: KeyLines,
    file: str | None,
    context: dict | None = None,
    listing: str = "harness methods",
) -> None:
    """A plugin's params against its Params model: unknown key (did you mean), wrong type, out of
    range, a per-task key naming a task the arm doesn't have; one sentence with the YAML line."""
    try:
        model.model_validate(params or {}, context=context)
    except ValidationError as err:
        raise schema_error(
            err, lines, file, root=model, prefix=loc, fix=f"`{listing}` lists every parameter with its type and range"
        ) from None


def _check_stage_budget(exp, fail) -> None:
    names = stage_names() if exp.budget.stage_steps else []
    for name in exp.budget.stage_steps:
        if name not in names:
            fail(("budget", "stage_steps", name), f"unknown stage '{name}'", did_you_mean(name, names))


def _check_preference_files(exp, key, task, fail) -> None:
    """data.preference / data.preference_test: JSONL files with prompt, chosen and rejected."""

    for split in ("preference", "preference_test"):
        rel = getattr(task.data, split)
        if rel is None:
            continue
        path, columns = _existing_file_columns(exp, ("tasks", key, "data", split), rel, "jsonl", "preference", fail)
        for field in PAIR_FIELDS:
            if field not in columns:
                fail(
                    ("tasks", key, "data", split),
                    f"field '{field}' is not in {path.name}, which has: {', '.join(columns)}",
                    "preference pairs need prompt, chosen and rejected",
                )
