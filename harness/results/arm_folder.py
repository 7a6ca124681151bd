"""The arm folder's format, written and read here only: arms/<slug>/result.json (an ArmResult),
predictions.jsonl (one JSON object per test item: id, prediction, reference, scores...) and the
golden rows an arm result carries (arms[i].golden[set].items). The runner, the API, the report
and the statistics all read an arm's files through these functions, so the format has one owner."""

from __future__ import annotations

import json
from pathlib import Path

from harness.paths import read_jsonl_objects

RESULT = "result.json"
PREDICTIONS = "predictions.jsonl"


def write_predictions(folder: Path, rows: list[dict]) -> str:
    """folder/predictions.jsonl, one row a line; returns the name an ArmResult's artifacts record."""
    with open(Path(folder) / PREDICTIONS, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return PREDICTIONS


def read_predictions(path: Path) -> list[dict]:
    """Every row of a predictions.jsonl ([] when there is none), or one HarnessError naming the
    file and the line that is not a JSON object (a truncated file): harness.paths.read_jsonl_objects."""
    path = Path(path)
    if not path.is_file():
        return []
    return read_jsonl_objects(path, fix="rerun the arm (`harness run --force --only <arm>`) to write it again")


def predictions_path(run_dir: Path, arm) -> Path:
    """arms/<slug>/predictions.jsonl of an arm of a run (an ArmResult, or an entry of results.json's
    arms); for one task of an arm spanning tasks, its tasks/<task>/ copy."""
    info, artifacts = (arm.arm, arm.artifacts) if hasattr(arm, "arm") else (arm["arm"], arm.get("artifacts"))
    folder = Path(run_dir) / "arms" / info.get("slug", "")
    name = (artifacts or {}).get("predictions", PREDICTIONS)
    if info.get("tasks") and (folder / "tasks" / info["task_key"] / name).is_file():
        return folder / "tasks" / info["task_key"] / name
    return folder / name


def arm_predictions(run_dir: Path, arm) -> list[dict]:
    """The predictions of one arm of a run ([] when it wrote none)."""
    return read_predictions(predictions_path(run_dir, arm))


def golden_rows(arm: dict) -> list[dict]:
    """An arm's golden results as flat rows, one per set and item: set, version, item_id, then the
    item's own fields (passed, must, expected, actual, failures, latency_ms...)."""
    return [
        {"set": name, "version": entry.get("version"), "item_id": item.get("id")}
        | {key: value for key, value in item.items() if key != "id"}
        for name, entry in (arm.get("golden") or {}).items()
        for item in entry.get("items") or []
    ]
