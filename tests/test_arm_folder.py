"""The arm folder's format has one owner (harness.results.arm_folder): what it writes it reads back,
a truncated predictions.jsonl is one sentence naming the file and line, golden rows flatten one way,
and no other module spells the predictions file's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.results.arm_folder import PREDICTIONS, arm_predictions, golden_rows, read_predictions, write_predictions

ROOT = Path(__file__).resolve().parents[1] / "harness"


def test_predictions_round_trip_through_the_arm_folder(tmp_path):
    folder = tmp_path / "arms" / "lora-llama"
    folder.mkdir(parents=True)
    rows = [{"id": "a", "prediction": "négatif", "scores": {"accuracy": 1.0}}, {"id": "b", "prediction": "x"}]
    name = write_predictions(folder, rows)
    assert name == PREDICTIONS and "négatif" in (folder / name).read_text(encoding="utf-8")  # not \u-escaped
    arm = {"arm": {"slug": "lora-llama"}, "artifacts": {"predictions": name}, "status": "ok"}
    assert arm_predictions(tmp_path, arm) == rows
    assert arm_predictions(tmp_path, {"arm": {"slug": "absent"}}) == []


def test_a_truncated_predictions_file_is_one_sentence_with_file_and_line(tmp_path):
    path = tmp_path / PREDICTIONS
    path.write_text('{"id": "a"}\n{"id": "b", "predic\n', encoding="utf-8")
    with pytest.raises(HarnessError) as err:
        read_predictions(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value)


def test_golden_rows_flatten_an_arms_golden_results():
    arm = {
        "arm": {"name": "lora"},
        "golden": {
            "mini": {
                "version": "1",
                "items": [{"id": "a", "passed": True, "must": False}, {"id": "b", "passed": False}],
            },
            "other": {"version": "2", "items": []},
        },
    }
    assert golden_rows(arm) == [
        {"set": "mini", "version": "1", "item_id": "a", "passed": True, "must": False},
        {"set": "mini", "version": "1", "item_id": "b", "passed": False},
    ]
    assert golden_rows({"arm": {"name": "x"}}) == []


def test_only_the_arm_folder_module_names_the_predictions_file():
    """Writers and readers (runner, API, report, statistics) go through harness.results.arm_folder."""
    spelled = sorted(
        str(path.relative_to(ROOT.parent))
        for path in ROOT.rglob("*.py")
        if path.name != "arm_folder.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip() == PREDICTIONS
    )
    assert spelled == []
