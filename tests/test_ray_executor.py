"""The Ray executor on a real two-node Ray cluster on this machine (fake GPUs: Ray's resources are
logical), started and stopped by the fixture, which leaves no Ray process behind."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.executor_plugins import install_plugins
from tests.test_executors import quality
from tests.test_runner import results_of, run_cli

pytestmark = pytest.mark.slow


def ray_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head and a worker node, each with 1 CPU, 1 (fake) GPU and its own scratch folder for arms."""
    from ray.cluster_utils import Cluster

    session_root = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    scratch = {name: tmp_path_factory.mktemp(f"scratch-{name}") for name in ("head", "worker")}
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "num_gpus": 1,
                "include_dashboard": False,
                "temp_dir": session_root,
                "env_vars": {"HARNESS_SCRATCH": str(scratch["head"])},
            },
        )
        cluster.add_node(
            num_cpus=1, num_gpus=1, temp_dir=session_root, env_vars={"HARNESS_SCRATCH": str(scratch["worker"])}
        )
        cluster.wait_for_nodes(timeout=120)
        yield cluster.address, scratch
    finally:
        if cluster is not None:
            cluster.shutdown()
        deadline = time.monotonic() + 60
        while ray_processes(session_root) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = ray_processes(session_root)
        for proc in left:  # never leave them running, even when the check below fails
            proc.kill()
        shutil.rmtree(session_root, ignore_errors=True)
        assert not left, f"Ray processes left behind: {[p.pid for p in left]}"


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
    deadline = time.monotonic() + 300
    # zero_shot's folder is in the driver's run only once its task returned it
    while time.monotonic() < deadline and not list(tmp_path.glob("reports/tiny/*/arms/zero_shot*/result.json")):
        time.sleep(0.5)

    def arm_processes() -> list:
        return ray_processes(str(scratch["head"])) + ray_processes(str(scratch["worker"]))

    while time.monotonic() < deadline and not arm_processes():
        time.sleep(0.5)  # the full_ft arm process is running on one of the nodes
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output
    _, results = results_of(tmp_path)
    assert [a["arm"]["method"] for a in results["arms"]] == ["zero_shot"]
    deadline = time.monotonic() + 60  # the cancelled task's worker is killed, and its arm process with it
    while time.monotonic() < deadline and arm_processes():
        time.sleep(0.5)
    assert not arm_processes()
