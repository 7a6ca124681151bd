"""The result schema: one ArmResult per arm (json on disk, written atomically) and the
results.json of a run that collects them."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field

from harness.paths import atomic_write_text
from harness.results.arm_folder import RESULT
from harness.results.audit import arm_health, budget_audit

LATEST = "latest"  # reports/<experiment>/latest names the newest run of an experiment


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ArmResult(BaseModel):
    arm: dict[str, Any]  # name, method, model_key, model, task_key, params, hash, slug
    status: Literal["ok", "failed", "skipped"]
    error: str | None = None
    consumed: dict[str, Any] | None = None  # harness.budget.Consumed as data
    metrics: dict[str, float | None] = Field(default_factory=dict)
    ci: dict[str, list[float]] = Field(default_factory=dict)  # 95% bootstrap CI: {metric: [low, high]}
    metrics_detail: dict[str, Any] = Field(default_factory=dict)  # per-class F1, confusion matrix, scorers
    curves: dict[str, list] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    reused_from: str | None = None  # the run a completed result was taken from on resume
    golden: dict[str, Any] = Field(default_factory=dict)  # {set name: harness.eval.golden_scoring.set_result}
    health: list[str] = Field(default_factory=list)  # diverged / collapsed (harness.results.audit.arm_health)

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> "ArmResult":
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


RERUN_FIX = "rerun the experiment (`harness run`) to write it again"


def read_run_results(run_dir: Path, needs: tuple[str, ...] = ("name",)) -> dict:
    """A run's results.json, checked to have the shape the report and the gate read (every arm a
    valid ArmResult with a name and task); one HarnessError naming the file and key if not."""
    from harness.errors import HarnessError
    from harness.paths import read_json_file

    path = Path(run_dir) / "results.json"
    data = read_json_file(path, what="results file", fix=RERUN_FIX)
    if not isinstance(data, dict) or not isinstance(data.get("arms"), list):
        raise HarnessError("has no `arms` list", file=str(path), key="arms", fix=RERUN_FIX)
    if not isinstance(data.get("experiment", {}), dict):
        raise HarnessError("`experiment` is not a mapping", file=str(path), key="experiment", fix=RERUN_FIX)
    for i, arm in enumerate(data["arms"]):
        check_arm_result(arm, str(path), f"arms[{i}]", needs)
    return data


def check_arm_result(data, file: str, key: str | None = None, needs: tuple[str, ...] = ("name",)) -> None:
    """One arm result (a result.json, or an entry of results.json) has the keys readers need."""
    from pydantic import ValidationError

    from harness.errors import HarnessError

    try:
        ArmResult.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HarnessError(f"{first['msg']} at {where or 'the top'}", file=file, key=key, fix=RERUN_FIX) from None
    for needed in needs:
        if not isinstance(data["arm"].get(needed), str):
            raise HarnessError(
                f"the arm has no `{needed}`", file=file, key=f"{key}.arm" if key else "arm", fix=RERUN_FIX
            )


def task_results(arm_dir: Path, result: ArmResult) -> list[ArmResult]:
    """The results a run records for one arm: the arm's own, or, for an arm that spans tasks
    (multi_task), the one result per task it wrote under tasks/<task key> (ordinary arm results
    whose task_key is that task, so reports, comparisons, the audit and the gate need no special case)."""
    if result.status != "ok" or "tasks" not in result.artifacts:
        return [result]
    out = []
    for key in result.arm.get("tasks", []):
        one = ArmResult.read(Path(arm_dir) / result.artifacts["tasks"] / key / RESULT)
        one.reused_from = result.reused_from
        out.append(one)
    return out


def reuse_problem(arm_dir: Path) -> str | None:
    """Why an earlier ok arm folder cannot be reused as it is, None when it can: its result.json
    (and each task's, for an arm spanning tasks) and its predictions.jsonl must pass the readers
    the report uses; a truncated copy or a torn write does not."""
    from harness.errors import HarnessError
    from harness.paths import read_jsonl_objects

    arm_dir = Path(arm_dir)
    try:
        result = ArmResult.read(arm_dir / "result.json")
        folders = [arm_dir]
        if "tasks" in result.artifacts:
            folders += [arm_dir / result.artifacts["tasks"] / key for key in result.arm.get("tasks", [])]
        for folder in folders:
            one = ArmResult.read(folder / "result.json")
            if one.artifacts.get("predictions"):
                read_jsonl_objects(folder / one.artifacts["predictions"], fix="")
    except HarnessError as err:
        return str(err).rstrip(";. ")
    except (OSError, ValueError) as err:  # a missing or unparsable result.json (pydantic's error is a ValueError)
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return None


def write_run_results(
    run_dir: Path,
    experiment: dict,
    results: list[ArmResult],
    extra: dict | None = None,
    statistics: Callable[[Path, dict, list[ArmResult]], dict] | None = None,
) -> Path:
    """results.json of a run: the experiment, every arm (ok, failed or skipped), the audit, and
    what `statistics` adds (the runner passes harness.eval.results_statistics.statistics_or_error)."""

    for r in results:
        r.health = arm_health(r)
    payload = {
        "experiment": experiment,
        "written_at": now(),
        "arms": [r.model_dump() for r in results],
        "budget_audit": budget_audit(results),
        **(statistics(run_dir, experiment, results) if statistics else {}),
        **(extra or {}),
    }
    path = run_dir / "results.json"
    atomic_write_text(path, json.dumps(payload, indent=2, default=str))
    return path


def point_latest(run_dir: Path) -> None:
    """Make reports/<experiment>/latest name run_dir: a relative symlink, replaced atomically; a
    one-line file with the run id where the file system refuses links (load_run reads both)."""
    run_dir = Path(run_dir)
    link, tmp = run_dir.parent / LATEST, run_dir.parent / f".{LATEST}.{os.getpid()}.tmp"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(run_dir.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        if link.is_symlink():
            link.unlink()
        atomic_write_text(link, run_dir.name + "\n")
