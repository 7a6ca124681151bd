"""End to end on the tiny models: `harness run`, failing arms, crashes, resume, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli.main import app

ALL_METHODS = [
    {"method": "full_ft", "model": "bert", "lr": 1e-3},
    {"method": "lora", "model": "bert", "lr": 1e-3},
    {"method": "zero_shot", "model": "llama"},
    {"method": "few_shot", "model": "llama", "params": {"k": 2}},
    {"method": "lora", "model": "llama", "lr": 1e-3},
    {"method": "full_ft", "model": "llama", "lr": 1e-3},
]


def run_cli(path: Path, *args: str, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)  # reports/ lands next to the test's experiment
    try:
        return CliRunner().invoke(app, ["run", str(path), *args], env={"COLUMNS": "250"})
    finally:
        os.chdir(old)


def results_of(cwd: Path, name: str = "tiny") -> tuple[Path, dict]:
    run_dir = sorted(p for p in (cwd / "reports" / name).iterdir() if p.name != "latest")[-1]
    return run_dir, json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
def test_end_to_end_every_method_trains_scores_and_shares_the_budget(write_experiment, tmp_path):
    path = write_experiment(ALL_METHODS)
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, results = results_of(tmp_path)
    arms = results["arms"]
    assert [a["status"] for a in arms] == ["ok"] * 6, [a.get("error") for a in arms]
    for arm in arms:
        m = arm["metrics"]
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
        assert m["peak_memory_mb"] > 50 and m["latency_p95_ms"] >= m["latency_p50_ms"] > 0
        assert 0 <= m["trainable_params"] <= m["total_params"]
        lines = (run_dir / "arms" / arm["arm"]["slug"] / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == 8 and {"id", "prediction", "reference"} <= set(json.loads(lines[0]))
    trained = [a for a in arms if a["consumed"]]
    assert len(trained) == 4
    # The budget audit: same steps, same examples, same order for every trained arm.
    assert {(a["consumed"]["steps"], a["consumed"]["examples"], a["consumed"]["order_hash"]) for a in trained} == {
        (2, 8, trained[0]["consumed"]["order_hash"])
    }
    assert results["budget_audit"]["identical"] is True
    untrained = [a for a in arms if not a["consumed"]]
    assert all(a["metrics"]["trainable_params"] == 0 for a in untrained)
    lora = next(a for a in arms if a["arm"]["method"] == "lora" and a["arm"]["model_key"] == "llama")
    full = next(a for a in arms if a["arm"]["method"] == "full_ft" and a["arm"]["model_key"] == "llama")
    assert (
        0 < lora["metrics"]["trainable_params"] < full["metrics"]["trainable_params"] == full["metrics"]["total_params"]
    )
    assert (run_dir / "arms" / lora["arm"]["slug"] / "adapter" / "adapter_config.json").is_file()
    for arm in arms:  # the console table names every arm
        assert arm["arm"]["name"] in result.output


def test_failing_arm_is_recorded_and_the_others_go_on(write_experiment, tmp_path):
    path = write_experiment(
        [
            {"method": "lora", "model": "llama", "params": {"target_modules": ["no_such_module"]}},
            {"method": "zero_shot", "model": "llama"},
        ]
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 1, result.output
    _, results = results_of(tmp_path)
    failed, ok = results["arms"]
    assert failed["status"] == "failed" and "no_such_module" in failed["error"]
    assert ok["status"] == "ok" and ok["metrics"]["accuracy"] is not None


METHOD_PLUGIN = """
import os, signal
from harness.methods import Method
from harness.methods.registry import TrainedParams

class Plugin(Method):
    description = "fails inside its arm process, in the test's way"

    class Params(TrainedParams):
        lr: float = 1e-3

    def wrap(self, model, params, ctx):
        {body}
"""


def install_method_plugin(tmp_path, monkeypatch, name: str, wrap_body: str) -> None:
    """A real third-party method whose wrap runs `wrap_body`, registered through the
    `harness.methods` entry-point group, in this process and in the arm processes."""
    from harness.methods import registry

    site = tmp_path / "site"
    (site / f"{name}_plugin-0.1.dist-info").mkdir(parents=True)
    (site / f"{name}_plugin.py").write_text(METHOD_PLUGIN.replace("{body}", wrap_body))
    (site / f"{name}_plugin-0.1.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 0.1\n"
    )
    (site / f"{name}_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        f"[harness.methods]\n{name} = {name}_plugin:Plugin\n"
    )
    # Prepended: the arm process must import this checkout's harness, not an installed one.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(site))
    registry.METHODS.load()  # the built-in methods first: restored as they are after the test
    monkeypatch.setattr(registry.METHODS, "loaded", False)
    monkeypatch.setattr(registry.METHODS, "entries", dict(registry.METHODS.entries))


def test_hard_crash_of_an_arm_process_is_recorded(write_experiment, tmp_path, monkeypatch):
    install_method_plugin(tmp_path, monkeypatch, "crash", "os.kill(os.getpid(), signal.SIGKILL)  # as kill -9 would")
    path = write_experiment([{"method": "crash", "model": "llama"}, {"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 1, result.output
    _, results = results_of(tmp_path)
    crashed, ok = results["arms"]
    assert crashed["status"] == "failed" and "killed by SIGKILL" in crashed["error"], crashed["error"]
    # A kill -9 the cgroup's OOM count does not support is not called out of memory (harness.execution.oom).
    assert "likely by the kernel" not in crashed["error"] and "out-of-memory killer" in crashed["error"]
    assert ok["status"] == "ok"


def test_rerun_reuses_completed_arms_and_force_redoes_them(write_experiment, tmp_path):
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    assert run_cli(path, cwd=tmp_path).exit_code == 0
    first_dir, first = results_of(tmp_path)
    assert first["arms"][0]["reused_from"] is None
    second = run_cli(path, cwd=tmp_path)
    assert second.exit_code == 0 and "reused" in second.output
    _, again = results_of(tmp_path)
    assert again["arms"][0]["reused_from"] == first_dir.name
    assert again["arms"][0]["metrics"] == first["arms"][0]["metrics"]
    assert run_cli(path, "--force", cwd=tmp_path).exit_code == 0
    _, forced = results_of(tmp_path)
    assert forced["arms"][0]["reused_from"] is None


@pytest.mark.timeout(900)  # the safety net; the test itself waits for events, never for a clock
def test_ctrl_c_keeps_completed_arms(write_experiment, tmp_path):
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}, {"method": "full_ft", "model": "llama"}],
        budget={"max_steps": 1_000_000},
    )  # never ends by itself (the example order is lazy)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        # Events, not a clock: the first arm's result, then the second arm's process started (its
        # log.txt); checked every 0.2 s, for as long as it takes, unless the run ends first.
        while not list(tmp_path.glob("reports/tiny/*/arms/full_ft*/log.txt")):
            assert proc.poll() is None, "the run ended before the second arm started:\n" + proc.stdout.read()
            time.sleep(0.2)
        assert list(tmp_path.glob("reports/tiny/*/arms/zero_shot*/result.json")), "the first arm did not complete"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        output = proc.stdout.read()
        proc.wait()
    finally:
        if proc.poll() is None:  # the safety net fired: leave no run behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output
    assert "interrupted" in output
    _, results = results_of(tmp_path)
    assert [a["arm"]["method"] for a in results["arms"]] == ["zero_shot"]
    assert results["arms"][0]["status"] == "ok"
