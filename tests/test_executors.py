"""The local pool (`harness run --jobs N`): arms side by side, each on its own device, the same
results as one at a time; choosing an executor; the device pool."""

from __future__ import annotations

import sys
import threading

import pytest

from harness.errors import HarnessError
from harness.execution.devices import DevicePool, busy_cpu_hint, threads_per_arm
from tests.executor_plugins import install_plugins
from tests.test_runner import results_of, run_cli

COST_WORDS = ("latency", "memory", "seconds", "per_s", "_mb")


def quality(arm: dict) -> dict:
    """What must not depend on the executor: every metric but time and memory, and the budget consumed."""
    metrics = {k: v for k, v in arm["metrics"].items() if not any(w in k for w in COST_WORDS)}
    consumed = {k: v for k, v in (arm["consumed"] or {}).items() if "seconds" not in k and "per_s" not in k}
    return {"metrics": metrics, "consumed": consumed, "loss": arm["curves"].get("loss")}


def test_two_jobs_run_two_arms_at_once_each_on_its_own_device(write_experiment, tmp_path, monkeypatch):
    install_plugins(tmp_path / "site", monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # two fake devices: the pool hands one to each arm
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    path = write_experiment(
        [
            {"method": "rendezvous", "model": "llama", "params": {"folder": str(meeting), "me": "a", "other": "b"}},
            {"method": "rendezvous", "model": "llama", "params": {"folder": str(meeting), "me": "b", "other": "a"}},
        ]
    )
    result = run_cli(path, "--jobs", "2", "--no-track", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    _, results = results_of(tmp_path)
    first, second = results["arms"]
    assert first["status"] == second["status"] == "ok", (first["error"], second["error"])
    # Each arm waited for the other's file, so both ran at once; their recorded times overlap too.
    assert first["started_at"] <= second["finished_at"] and second["started_at"] <= first["finished_at"]
    seen = {(meeting / "a").read_text(), (meeting / "b").read_text()}
    assert seen == {"0", "1"}
    placements = [a["provenance"]["placement"] for a in results["arms"]]
    assert {p["visible_devices"] for p in placements} == {"0", "1"}
    assert all(p["threads"] == threads_per_arm(2) and p["executor"] == "local" for p in placements)


@pytest.mark.slow
def test_two_jobs_give_the_results_of_one_job(write_experiment, tmp_path):
    path = write_experiment(
        [{"method": "lora", "model": "llama", "lr": 1e-3}, {"method": "full_ft", "model": "bert", "lr": 1e-3}]
    )
    first = run_cli(path, "--jobs", "2", "--no-track", cwd=tmp_path)
    assert first.exit_code == 0, first.output
    _, parallel = results_of(tmp_path)
    assert run_cli(path, "--jobs", "1", "--force", "--no-track", cwd=tmp_path).exit_code == 0
    _, serial = results_of(tmp_path)
    assert [a["status"] for a in parallel["arms"] + serial["arms"]] == ["ok"] * 4
    assert [a["arm"]["name"] for a in parallel["arms"]] == [a["arm"]["name"] for a in serial["arms"]]
    for one, other in zip(parallel["arms"], serial["arms"]):
        assert quality(one) == quality(other), one["arm"]["name"]
        assert quality(one)["metrics"]["accuracy"] is not None


def test_device_pool_makes_an_arm_wait_for_k_free_devices():
    pool = DevicePool(["0", "1", "2"])
    held = pool.acquire(2)
    assert held == ["0", "1"]
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(2)))
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive() and not got  # one device free, two needed: still waiting
    pool.release(held)
    waiter.join(timeout=30)
    assert got and len(got[0]) == 2 and "2" in got[0]
    pool.close()
    assert pool.acquire(3) is None  # a closed pool (the run is stopping) hands out nothing


@pytest.mark.parametrize(
    "args, words",
    [
        (["--executor", "slurm"], "--executor slurm is not an executor"),
        (["--jobs", "2", "--executor", "ray"], "--jobs sets the local pool's size"),
        (["--address", "auto"], "--address names a Ray cluster"),
    ],
)
def test_contradicting_executor_options_are_one_sentence(write_experiment, tmp_path, args, words):
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, *args, "--no-track", cwd=tmp_path)
    assert result.exit_code == 2 and words in result.output, result.output
    assert "Traceback" not in result.output


def test_ray_executor_without_ray_installed_is_one_sentence(write_experiment, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is not installed
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, "--executor", "ray", "--no-track", cwd=tmp_path)
    assert result.exit_code == 2 and "needs the `ray` package" in result.output, result.output


def test_harness_threads_is_the_users_choice_of_threads_per_arm(monkeypatch):
    monkeypatch.setattr("harness.execution.devices.usable_cores", lambda: 8)
    monkeypatch.delenv("HARNESS_THREADS", raising=False)
    assert threads_per_arm(2) == 4
    monkeypatch.setenv("HARNESS_THREADS", "1")  # a machine shared with other work
    assert threads_per_arm(2) == 1
    monkeypatch.setenv("HARNESS_THREADS", "zero")  # not a number: one sentence, never silently ignored
    with pytest.raises(HarnessError, match="HARNESS_THREADS is 'zero', not a positive whole number"):
        threads_per_arm(4)


def test_a_busy_cpu_is_named_when_arms_use_several_threads():
    hint = busy_cpu_hint(2, load=3.8)
    assert hint is not None and "3.8" in hint and "HARNESS_THREADS=1" in hint
    assert busy_cpu_hint(2, load=0.2) is None  # idle: nothing to say
    assert busy_cpu_hint(1, load=3.8) is None  # one thread per arm waits on no other thread
