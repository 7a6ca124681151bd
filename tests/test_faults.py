"""Injected faults: diverged and collapsed arms (flagged, never best), an unopenable tracking store
(one warning, the run goes on), a full disk or a file in the way at the start of a run (one
sentence, nothing half-written). The corrupt model cache is in test_models.py."""

from __future__ import annotations

import errno

import pytest
from rich.console import Console

from harness.report import cells, view
from harness.report.console import best_by_metric, print_results
from harness.results.arm_result import ArmResult
from harness.results.audit import arm_health, budget_audit
from tests.test_runner import results_of, run_cli


def arm(name: str, accuracy: float, *, losses=(0.7, 0.6, 0.5, 0.45), predicted=None) -> ArmResult:
    labels = ["negative", "positive"]
    matrix = [[5, 5], [0, 10]] if predicted is None else [[0, 10], [0, 10]]
    return ArmResult(
        arm={"name": name, "task_key": "sentiment", "method": "lora"},
        status="ok",
        metrics={"accuracy": accuracy},
        consumed={"steps": 4, "examples": 8, "order_hash": "x"},
        curves={"train_loss": [[i + 1, v] for i, v in enumerate(losses)]},
        metrics_detail={"confusion_matrix": {"labels": labels, "matrix": matrix}},
    )


def test_a_diverged_and_a_collapsed_arm_are_flagged_and_never_best(tmp_path):
    healthy = arm("lora · sound", 0.70)
    diverged = arm("lora · lr 1e3", 0.75, losses=(0.69, 3.2, 4_000.0, 130_794.0))  # the curve
    collapsed = arm("lora · one label", 0.80, predicted="positive")
    assert arm_health(healthy) == []
    assert arm_health(diverged)[0].startswith("diverged: train_loss rose from 0.69")
    assert arm_health(collapsed) == ["collapsed: predicted 'positive' for all 20 test items"]
    noisy = arm("lora · noisy", 0.7, losses=(0.7, 1.4, 0.9, 0.8))  # a bump is not divergence
    assert arm_health(noisy) == []

    results = [healthy, arm("lora · weaker", 0.60), diverged, collapsed]
    for r in results:
        r.health = arm_health(r)
    audit = budget_audit(results)
    assert set(audit["health"]) == {"lora · lr 1e3", "lora · one label"} and audit["identical"]
    as_json = {
        "experiment": {"name": "x"},
        "run_id": "r",
        "budget_audit": audit,
        "arms": [r.model_dump() for r in results],
    }
    assert best_by_metric(as_json["arms"], ["accuracy"]) == {"accuracy": 0.70}  # not 0.80, not 0.75
    assert cells.best_values(as_json["arms"], ["accuracy"]) == {"accuracy": 0.70}
    sentence = str(view.headline("sentiment", as_json["arms"], "accuracy", None))
    assert "<b>lora · sound</b> is best by accuracy" in sentence
    console = Console(record=True, width=250)
    print_results(as_json, console)
    text = console.export_text()
    assert "⚑ diverged lora · lr 1e3" in text and "⚑ collapsed lora · one label" in text


@pytest.mark.timeout(240)
@pytest.mark.parametrize("uri", ["sqlite:////proc/harness-no-such-folder/mlflow.db", "sqlite:////proc/mlflow.db"])
def test_an_unopenable_tracking_store_is_one_warning_and_the_run_goes_on(uri, write_experiment, tmp_path):
    path = write_experiment([{"method": "zero_shot", "model": "llama"}], edit=lambda d: d.update(tracking={"uri": uri}))
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and "MLflow tracking is off" in warnings[0], result.output
    assert "tracking database" in warnings[0]  # said before MLflow's own retry loop could start
    _, results = results_of(tmp_path)
    assert results["arms"][0]["status"] == "ok"


def test_a_full_disk_at_the_start_of_a_run_is_one_sentence_and_leaves_nothing(write_experiment, tmp_path, monkeypatch):
    from harness.execution import runner

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "atomic_write_text", full)
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, "--no-track", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "the disk is full" in result.output and "Traceback" not in result.output
    assert list((tmp_path / "reports" / "tiny").iterdir()) == []  # no empty run folder, no 0-byte experiment.json


def test_reports_being_a_file_is_one_sentence(write_experiment, tmp_path):
    (tmp_path / "reports").write_text("not a folder\n")
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, "--no-track", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "cannot start the run" in result.output and "a file is in the way" in result.output
    assert (tmp_path / "reports").read_text() == "not a folder\n"
