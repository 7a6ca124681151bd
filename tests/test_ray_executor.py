"""The Ray executor on a real two-node Ray cluster on this machine (fake GPUs: Ray's resources are
logical), started and stopped by the fixture, which leaves no Ray process behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.executor_plugins import install_plugins
from tests.ray_cluster import foreign_cluster, local_cluster, processes_naming, settle
from tests.test_executors import quality
from tests.test_runner import results_of, run_cli

pytestmark = pytest.mark.slow


def ray_processes(marker: str) -> list[psutil.Process]:
    return processes_naming(marker)


@pytest.fixture(scope="module")
def another_users_ray():
    """A Ray head someone else started on this machine, left running the whole time: the tests
    must neither use it nor count its processes as theirs."""
    with foreign_cluster() as root:
        yield root


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, another_users_ray):
    """A head and a worker node, each with 1 CPU, 1 (fake) GPU and its own scratch folder for arms,
    in a temp root of their own (tests/ray_cluster.py); the foreign cluster stays untouched."""
    scratch = {name: tmp_path_factory.mktemp(f"scratch-{name}") for name in ("head", "worker")}
    with local_cluster({name: {"HARNESS_SCRATCH": str(folder)} for name, folder in scratch.items()}) as address:
        yield address, scratch
    assert processes_naming(str(another_users_ray)), "the other user's Ray cluster was stopped by the tests"


def test_arms_spread_over_both_nodes_and_equal_a_local_run(ray_cluster, write_experiment, tmp_path):
    address, scratch = ray_cluster
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}, {"method": "lora", "model": "llama", "lr": 1e-3}]
    )
    result = run_cli(path, "--executor", "ray", "--address", address, "--no-track", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, on_ray = results_of(tmp_path)
    assert [a["status"] for a in on_ray["arms"]] == ["ok", "ok"], [a["error"] for a in on_ray["arms"]]
    placements = [a["provenance"]["placement"] for a in on_ray["arms"]]
    assert {p["executor"] for p in placements} == {"ray"}
    assert len({p["node"] for p in placements}) == 2  # one fake GPU per node: the arms landed on both
    assert all(p["visible_devices"] for p in placements)  # each pinned to the GPU Ray gave it
    assert len({(p["node"], p["visible_devices"]) for p in placements}) == 2
    # Each arm wrote into its node's own scratch folder, which the task deleted before returning:
    # everything the driver has came back as the task's return value.
    homes = {str(scratch["head"].resolve()), str(scratch["worker"].resolve())}
    assert {str(Path(p["arm_dir"]).parent) for p in placements} == homes
    assert not any(Path(p["arm_dir"]).exists() for p in placements)
    for arm in on_ray["arms"]:
        folder = run_dir / "arms" / arm["arm"]["slug"]
        assert (folder / "predictions.jsonl").is_file() and (folder / "log.txt").is_file()
    lora = next(a for a in on_ray["arms"] if a["arm"]["method"] == "lora")
    assert (run_dir / "arms" / lora["arm"]["slug"] / "adapter" / "adapter_config.json").is_file()

    local = run_cli(path, "--jobs", "1", "--force", "--no-track", cwd=tmp_path)
    assert local.exit_code == 0, local.output
    _, on_local = results_of(tmp_path)
    for one, other in zip(on_ray["arms"], on_local["arms"]):
        assert quality(one) == quality(other), one["arm"]["name"]


def test_a_killed_worker_is_retried_and_a_raising_arm_fails_alone(ray_cluster, write_experiment, tmp_path, monkeypatch):
    address, _ = ray_cluster
    install_plugins(tmp_path / "site", monkeypatch)
    marker = tmp_path / "worker-killed"
    path = write_experiment(
        [
            {"method": "kill_worker_once", "model": "llama", "params": {"marker": str(marker)}},
            {"method": "lora", "model": "llama", "params": {"target_modules": ["no_such_module"]}},
            {"method": "zero_shot", "model": "llama"},
        ]
    )
    result = run_cli(path, "--executor", "ray", "--address", address, "--no-track", cwd=tmp_path)
    assert result.exit_code == 1, result.output  # one arm failed
    _, results = results_of(tmp_path)
    killed, raising, plain = results["arms"]
    assert marker.is_file()  # the first attempt did kill its Ray worker (SIGKILL) mid-arm ...
    assert killed["status"] == "ok", killed["error"]  # ... and Ray's retry completed the arm
    assert raising["status"] == "failed" and "no_such_module" in raising["error"]
    assert plain["status"] == "ok"


def test_ctrl_c_cancels_running_arms_and_keeps_finished_ones(ray_cluster, write_experiment, tmp_path):
    address, scratch = ray_cluster
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}, {"method": "full_ft", "model": "llama"}], budget={"max_steps": 2000}
    )
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(path), "--executor", "ray", "--address", address, "--no-track"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # zero_shot's folder is in the driver's run only once its task returned it
    assert settle(lambda: list(tmp_path.glob("reports/tiny/*/arms/zero_shot*/result.json")))

    def arm_processes() -> list:
        return ray_processes(str(scratch["head"])) + ray_processes(str(scratch["worker"]))

    assert settle(arm_processes)  # the full_ft arm process is running on one of the nodes
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output
    _, results = results_of(tmp_path)
    assert [a["arm"]["method"] for a in results["arms"]] == ["zero_shot"]
    # the cancelled task's worker is killed, and its arm process with it
    assert settle(lambda: not arm_processes(), timeout=60), [p.pid for p in arm_processes()]
