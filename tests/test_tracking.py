"""MLflow tracking end to end: a real run logged to a SQLite store, read back through the REAL
`harness ui` server's REST API; a broken tracking URI only warns."""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request

import pytest

from harness.planning.experiment_loader import load_experiment
from harness.results.arm_result import ArmResult
from harness.tracking.mlflow_tracker import MlflowTracker, resolve_store
from harness.tracking.ui import _bind_problem, healthy, start_ui, stop_ui
from tests.test_runner import results_of, run_cli

FAILING = {"method": "lora", "model": "llama", "params": {"target_modules": ["no_such_module"]}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Api:
    """The MLflow REST API of a running server (what the UI itself calls)."""

    def __init__(self, url: str):
        self.base = url + "/api/2.0/mlflow/"

    def get(self, path: str, **query) -> dict:
        with urllib.request.urlopen(self.base + path + "?" + urllib.parse.urlencode(query)) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())


def tags_of(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params_of(run: dict) -> dict:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metrics_of(run: dict) -> dict:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


@pytest.mark.slow
@pytest.mark.timeout(900)  # the safety net: the test waits for /health and for answers, never for a clock
def test_run_is_tracked_and_served_by_harness_ui(write_experiment, tmp_path):
    store = f"sqlite:///{tmp_path / 'team' / 'track.db'}"
    (tmp_path / "team").mkdir()
    path = write_experiment(
        [{"method": "lora", "model": "bert", "lr": 1e-3}, FAILING],
        edit=lambda d: d.update(tracking={"uri": store, "experiment_name": "tiny-tracked"}),
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 1, result.output  # one arm failed, as planned
    assert "tracking is off" not in result.output
    run_dir, results = results_of(tmp_path)
    by_name = {a["arm"]["name"]: a for a in results["arms"]}
    assert (tmp_path / "team" / "mlruns").is_dir() and not (tmp_path / "mlflow.db").exists()

    port = free_port()
    proc, url = start_ui(store, port=port, timeout_s=None)
    try:
        assert url == f"http://127.0.0.1:{port}"
        api = Api(url)
        experiment = api.get("experiments/get-by-name", experiment_name="tiny-tracked")["experiment"]
        runs = api.post("runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
        parents = [r for r in runs if "mlflow.parentRunId" not in tags_of(r)]
        assert len(parents) == 1
        parent = parents[0]
        assert parent["info"]["run_name"] == f"tiny {run_dir.name}" and parent["info"]["status"] == "FINISHED"
        assert metrics_of(parent) == {"arms_ok": 1.0, "arms_failed": 1.0, "arms_skipped": 0.0}
        listed = api.get("artifacts/list", run_id=parent["info"]["run_id"])
        assert "results.json" in {f["path"] for f in listed["files"]}

        children = {r["info"]["run_name"]: r for r in runs if r is not parent}
        assert set(children) == set(by_name) == {"lora · bert", "lora · llama"}
        for name, child in children.items():
            arm = by_name[name]
            tags, params = tags_of(child), params_of(child)
            assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]
            assert tags["arm.hash"] == arm["arm"]["hash"] and tags["arm.status"] == arm["status"]
            assert (tags["arm.method"], tags["arm.model_key"], tags["arm.task_key"]) == (
                arm["arm"]["method"],
                arm["arm"]["model_key"],
                "sentiment",
            )
            assert tags["harness.version"] and tags["harness.git_commit"]
            assert params["method"] == arm["arm"]["method"] and params["task"] == "sentiment"
            assert params["model"] == arm["arm"]["model"] and params["budget.max_steps"] == "2"
            assert {f"param.{k}" for k in arm["arm"]["params"]} <= set(params)
            inputs = child["inputs"]["dataset_inputs"]
            assert {i["dataset"]["name"] for i in inputs} == {"sentiment train", "sentiment test"}

        ok, arm = children["lora · bert"], by_name["lora · bert"]
        # Every final metric under its own plain key (the same key for every arm, so the UI can
        # compare arms), None skipped, plus the train_loss curve.
        expected = {k: v for k, v in arm["metrics"].items() if v is not None}
        assert set(metrics_of(ok)) == set(expected) | {"train_loss"}
        assert {"accuracy", "macro_f1", "peak_memory_mb", "latency_p50_ms"} <= set(expected)
        assert metrics_of(ok)["accuracy"] == pytest.approx(arm["metrics"]["accuracy"])
        assert ok["info"]["status"] == "FINISHED" and "harness.device" in tags_of(ok)
        history = api.get("metrics/get-history", run_id=ok["info"]["run_id"], metric_key="train_loss")["metrics"]
        assert len(history) == 2 and sorted((m["step"], m["value"]) for m in history) == [
            (step, pytest.approx(loss)) for step, loss in arm["curves"]["train_loss"]
        ]
        files = {f["path"] for f in api.get("artifacts/list", run_id=ok["info"]["run_id"])["files"]}
        assert {"predictions.jsonl", "result.json", "adapter"} <= files

        failed = children["lora · llama"]
        assert failed["info"]["status"] == "FAILED"
        assert "no_such_module" in tags_of(failed)["error"]
        assert params_of(failed)["param.target_modules"] == '["no_such_module"]'
        assert "error.txt" in {f["path"] for f in api.get("artifacts/list", run_id=failed["info"]["run_id"])["files"]}
    finally:
        code = stop_ui(proc)
    assert code is not None and proc.poll() is not None
    assert not healthy(url) and _bind_problem("127.0.0.1", port) is None  # its worker is gone too: the port is free


def test_broken_tracking_uri_only_warns_and_the_run_completes(write_experiment, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}], edit=lambda d: d.update(tracking={"uri": dead})
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.count("MLflow tracking is off") == 1 and dead in result.output
    _, results = results_of(tmp_path)
    assert results["arms"][0]["status"] == "ok"


@pytest.mark.parametrize("uri", ["nosuchscheme://somewhere", "sqlite:///{tmp}/a-file/track.db"])
def test_tracker_turns_itself_off_on_any_mlflow_error(uri, write_experiment, tmp_path, capsys):
    experiment = load_experiment(write_experiment([{"method": "zero_shot", "model": "llama"}]))
    (tmp_path / "a-file").write_text("a file where the store's folder should be")
    tracker = MlflowTracker(uri=uri.format(tmp=tmp_path))
    tracker.start_run(experiment, tmp_path)
    result = ArmResult(
        arm={"name": "zero_shot · llama", "slug": "x", "hash": "h"}, status="ok", metrics={"accuracy": 1}
    )
    tracker.log_arm(result, tmp_path)
    tracker.finish_run(tmp_path, [result])
    assert tracker.enabled is False
    assert capsys.readouterr().err.count("MLflow tracking is off") == 1


def test_tracking_can_be_switched_off(write_experiment, tmp_path):
    from harness.api import tracker_for as _tracker

    on = load_experiment(write_experiment([{"method": "zero_shot", "model": "llama"}]))
    assert isinstance(_tracker(on), MlflowTracker)
    assert _tracker(on, track=False) is None  # --no-track
    off = load_experiment(
        write_experiment(
            [{"method": "zero_shot", "model": "llama"}], edit=lambda d: d.update(tracking={"enabled": False})
        )
    )
    assert _tracker(off) is None


def test_store_defaults_to_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert resolve_store() == (f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:5000")
    assert resolve_store() == ("http://mlflow.team:5000", None)  # a server keeps its own artifact root
    assert resolve_store(f"sqlite:///{tmp_path}/x/t.db")[1] == (tmp_path / "x" / "mlruns").as_uri()


def test_ui_refuses_a_busy_port_and_a_server_uri(tmp_path):
    from harness.errors import HarnessError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(HarnessError, match="in use"):
            start_ui(f"sqlite:///{tmp_path}/t.db", port=port)
    with pytest.raises(HarnessError, match="server already"):
        start_ui("http://127.0.0.1:5000")


def test_parent_run_gets_the_corrected_comparisons(write_experiment, tmp_path):
    """finish_run logs the pairwise tests on the parent run: counts before and after the
    correction, the smallest adjusted p, each task's minimum detectable difference, and a
    comparisons.json table with the raw and adjusted p of every pair."""
    import mlflow

    experiment = load_experiment(write_experiment([{"method": "zero_shot", "model": "llama"}]))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    comparisons = [
        {
            "task": "sentiment",
            "metric": "accuracy",
            "a": "x",
            "b": "y",
            "difference": 0.2,
            "p_value": 0.01,
            "p_adjusted": 0.03,
            "significant": True,
            "better": "x",
            "test": "mcnemar",
            "correction": "holm",
            "family_size": 3,
            "n": 64,
        },
        {
            "task": "sentiment",
            "metric": "accuracy",
            "a": "x",
            "b": "z",
            "difference": 0.1,
            "p_value": 0.04,
            "p_adjusted": 0.08,
            "significant": False,
            "better": None,
            "test": "mcnemar",
            "correction": "holm",
            "family_size": 3,
            "n": 64,
        },
    ]
    (run_dir / "results.json").write_text(
        json.dumps(
            {
                "comparisons": comparisons,
                "correction": "holm",
                "alpha": 0.05,
                "sensitivity": {"sentiment": {"metric": "accuracy", "mdd": 0.157}},
            }
        )
    )
    tracker = MlflowTracker(uri=f"sqlite:///{tmp_path / 'track.db'}")
    tracker.start_run(experiment, run_dir)
    parent = tracker.parent_id
    tracker.finish_run(run_dir, [])
    assert tracker.enabled, "tracking turned itself off"
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    run = client.get_run(parent)
    assert {
        k: run.data.metrics[k]
        for k in ("comparisons_tested", "comparisons_significant_raw", "comparisons_significant", "min_p_adjusted")
    } == {
        "comparisons_tested": 2,
        "comparisons_significant_raw": 2,
        "comparisons_significant": 1,
        "min_p_adjusted": 0.03,
    }
    assert run.data.metrics["mdd.sentiment.accuracy"] == pytest.approx(0.157)
    assert run.data.params["statistics.correction"] == "holm"
    with open(client.download_artifacts(parent, "comparisons.json", str(tmp_path)), encoding="utf-8") as fh:
        table = json.load(fh)
    assert table["columns"][:8] == ["task", "metric", "a", "b", "difference", "p_value", "p_adjusted", "significant"]
    assert [row[5:7] for row in table["data"]] == [[0.01, 0.03], [0.04, 0.08]]
