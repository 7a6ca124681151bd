"""`harness gate --register`: end to end through MLflow's own client on a SQLite-backed registry.
A passing candidate becomes a version with the verdict in its tags; a failing one registers
nothing; the registered folder, loaded back, gives the candidate's golden-set predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.config.golden_set import load_golden
from harness.golden import gate
from harness.tracking.mlflow_tracker import import_mlflow
from tests.conftest import experiment_dict, run_in

NAME = "tiny-sentiment"
GOLDEN = {
    "name": "mini",
    "task": "classification",
    "version": "3",
    "labels": ["negative", "positive"],
    "instruction": "Say positive or negative.",
    "prompt": "review: {text} sentiment:",
    # The twins share an input and want opposite labels: no model passes both, so a baseline
    # that claims every item passes is always a regression for the candidate.
    "items": [
        {"id": "twin-pos", "input": "the movie was fine.", "expect": {"label": "positive"}},
        {"id": "twin-neg", "input": "the movie was fine.", "expect": {"label": "negative"}},
        {"id": "b", "input": "the plot was awful.", "expect": {"label": "negative"}},
        {"id": "c", "input": "the music was wonderful.", "expect": {"label": "positive"}},
        {"id": "d", "input": "the cast was boring.", "expect": {"label": "negative"}},
    ],
}


@pytest.fixture(scope="module")
def tracked_run(tiny_models, tiny_data, tmp_path_factory):
    """(folder, store URI, golden path, Run): a LoRA arm and a zero-shot arm, scored on the golden
    set, tracked to a SQLite store."""
    folder = tmp_path_factory.mktemp("registry")
    golden = folder / "mini.yaml"
    golden.write_text(yaml.safe_dump(GOLDEN, sort_keys=False))
    store = f"sqlite:///{folder / 'mlflow.db'}"
    data = experiment_dict(
        tiny_models,
        tiny_data,
        [{"method": "lora", "model": "llama", "lr": 1e-2}, {"method": "zero_shot", "model": "llama"}],
    )
    data.update(golden_sets=[str(golden)], tracking={"uri": store})
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run = run_in(folder, path)
    assert [a["status"] for a in run.arms] == ["ok", "ok"]
    return folder, store, golden, run


def gate_cli(store: str, *args: str):
    return CliRunner().invoke(
        app, ["gate", *args, "--mlflow", store], env={"COLUMNS": "250", "MLFLOW_TRACKING_URI": store}
    )


def versions(store: str) -> list:
    client = import_mlflow().MlflowClient(tracking_uri=store, registry_uri=store)
    return sorted(client.search_model_versions(f"name='{NAME}'"), key=lambda v: int(v.version))


def test_pass_registers_a_version_that_reproduces_the_golden_predictions(tracked_run, tmp_path):
    folder, store, golden, run = tracked_run
    result = gate_cli(
        store,
        "--golden",
        str(golden),
        "--candidate",
        str(run.run_dir),
        "--baseline",
        str(run.run_dir),
        "--arm",
        "lora",
        "--register",
        NAME,
    )
    assert result.exit_code == 0, result.output
    assert f"registered {NAME} version 1" in result.output
    [version] = versions(store)
    arm = next(a for a in run.arms if a["arm"]["method"] == "lora")
    tags = version.tags
    assert tags["harness.gate"] == "passed" and tags["golden_set"] == "mini" and tags["golden_version"] == "3"
    assert tags["harness.run_id"] == run.run_id and tags["harness.arm"] == "lora · llama"
    assert tags["arm.hash"] == arm["arm"]["hash"] and str(run.run_dir) in tags["gate.baseline"]
    assert float(tags["metric.accuracy"]) == pytest.approx(arm["metrics"]["accuracy"])
    assert "Passed golden gate mini@3" in version.description and version.run_id

    mlflow = import_mlflow()
    loaded = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path), tracking_uri=store)
    )
    assert (loaded / "adapter_config.json").is_file() and (loaded / "adapter_model.safetensors").is_file()
    rescored = gate.resolve_side(str(loaded), load_golden(golden), role="candidate")
    recorded = arm["golden"]["mini"]["items"]
    assert [(r["id"], r["actual"], r["passed"]) for r in rescored.items] == [
        (r["id"], r["actual"], r["passed"]) for r in recorded
    ]


def test_a_failing_gate_registers_nothing(tracked_run, tmp_path):
    folder, store, golden, run = tracked_run
    before = len(versions(store))
    baseline = tmp_path / "all-pass.json"
    arm = next(a for a in run.arms if a["arm"]["method"] == "lora")
    items = [{**r, "passed": True, "failures": []} for r in arm["golden"]["mini"]["items"]]
    baseline.write_text(
        __import__("json").dumps(
            {"kind": gate.BASELINE_KIND, "set": "mini", "version": "3", "source": "claimed", "items": items}
        )
    )
    result = gate_cli(
        store,
        "--golden",
        str(golden),
        "--candidate",
        str(run.run_dir),
        "--baseline",
        str(baseline),
        "--arm",
        "lora",
        "--max-drop",
        "0",
        "--register",
        NAME,
    )
    assert result.exit_code == 1, result.output
    assert "not registered" in result.output and len(versions(store)) == before


def test_an_arms_mlflow_run_registers_where_it_already_holds_the_adapter(tracked_run):
    folder, store, golden, run = tracked_run
    client = import_mlflow().MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.tags["mlflow.experimentKind"] == "finetuning"
    child = next(r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("arm.method") == "lora")
    before = len(versions(store))
    result = gate_cli(
        store,
        "--golden",
        str(golden),
        "--candidate",
        f"mlflow:{child.info.run_id}",
        "--baseline",
        str(run.run_dir),
        "--arm",
        "lora",
        "--register",
        NAME,
    )
    assert result.exit_code == 0, result.output
    newest = versions(store)[-1]
    assert len(versions(store)) == before + 1 and newest.run_id == child.info.run_id
    assert newest.source == f"{child.info.artifact_uri}/adapter"


def test_nothing_to_register_is_a_usage_error_before_the_gate_runs(tracked_run):
    folder, store, golden, run = tracked_run
    before = len(versions(store))
    result = gate_cli(
        store,
        "--golden",
        str(golden),
        "--candidate",
        str(run.run_dir),
        "--baseline",
        str(run.run_dir),
        "--arm",
        "zero_shot",
        "--register",
        NAME,
    )
    assert result.exit_code == 2 and "saved no adapter" in result.output, result.output
    assert "gate mini@3" not in result.output and len(versions(store)) == before


def test_a_full_fine_tune_that_kept_its_model_is_registrable_from_its_arm_folder(tmp_path):
    """budget.save: full leaves the trained weights in the arm's model/ folder: --register takes
    them; the same arm without them is still one sentence."""
    from harness.errors import HarnessError
    from harness.golden.promote import _from_arm

    arm_dir = tmp_path / "arms" / "full-ft"
    (arm_dir / "model").mkdir(parents=True)
    result = {"arm": {"name": "full_ft"}, "artifacts": {"predictions": "predictions.jsonl", "model": "model"}}
    kept = _from_arm(arm_dir, result, run_id="run-1")
    assert (kept.kind, kept.local_dir) == ("model", (arm_dir / "model").resolve())
    with pytest.raises(HarnessError, match="budget.save: full"):
        _from_arm(arm_dir, {**result, "artifacts": {"predictions": "predictions.jsonl"}}, run_id="run-1")
