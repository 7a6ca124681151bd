"""Ranks never outlive their arm (issue 25): a runner interrupted or killed, or a rank that raises,
leaves no process of the arm behind, and the arm gets the right status. Each test watches only the
arm's own processes (the runner's descendants, or the pids its ranks wrote), never the machine's.
Budgets are long and the process-group timeout an hour, so only the teardown can end these arms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.execution import launch

LONG = {"max_steps": 100000, "batch_size": 4, "checkpoint_every": 1, "dist_timeout_s": 3600}
ARM = {"method": "lora", "model": "llama", "lr": 1e-3, "devices": 2}


def _wait_for(predicate, what: str, proc: subprocess.Popen, log: Path):
    """Poll a file-system condition until it holds (pytest-timeout is the safety net)."""
    while True:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}: {log.read_text()[-3000:]}")
        psutil.wait_procs([], timeout=0.2)  # a short pause between two looks at the disk


def _gone(procs: list[psutil.Process], timeout: float = 120) -> list[psutil.Process]:
    """The processes still running after at most `timeout` seconds (zombies count as gone)."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _start_run(write_experiment, tmp_path: Path) -> tuple[subprocess.Popen, list[psutil.Process], Path]:
    """`harness run` of one 2-rank arm in its own session; returns once a rank has checkpointed
    (both ranks are training), with the runner's descendants: torchrun and its two ranks."""
    path = write_experiment([ARM], budget=LONG)
    env = {**os.environ, "HARNESS_THREADS": "1"}
    log = tmp_path / "runner.log"
    with open(log, "w") as out:
        runner = subprocess.Popen(
            [sys.executable, "-m", "harness", "run", str(path), "--no-track"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    checkpoint = _wait_for(
        lambda: next(iter(tmp_path.glob("reports/*/*/arms/*/checkpoints/step-*.pt")), None), "a checkpoint", runner, log
    )
    family = psutil.Process(runner.pid).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in family]
    ranks = [c for c in commands if "harness.execution.arm_process" in c and "torch.distributed.run" not in c]
    assert len(ranks) == 2 and len(family) >= 3, commands
    return runner, family, checkpoint.parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigint_to_the_runner_alone_stops_every_rank(write_experiment, tmp_path):
    runner, family, arm_dir = _start_run(write_experiment, tmp_path)
    os.kill(runner.pid, signal.SIGINT)  # the runner's pid only, not its process group
    assert runner.wait(timeout=120) != 0
    assert _gone(family) == []
    result = arm_dir / "result.json"
    assert not result.exists() or json.loads(result.read_text())["status"] != "ok"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_to_the_runner_stops_every_rank_and_nothing_writes_its_result(write_experiment, tmp_path):
    runner, family, arm_dir = _start_run(write_experiment, tmp_path)
    runner.kill()
    runner.wait()
    assert _gone(family) == []
    assert not (arm_dir / "result.json").exists()  # no rank wrote into the run that was killed


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("failing_rank", [0, 1])
def test_an_exception_on_one_rank_stops_the_others_with_a_failed_arm(
    failing_rank, write_experiment, tmp_path, monkeypatch
):
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    (arm,) = plan(load_experiment(write_experiment([ARM], budget=LONG)))
    out_dir = tmp_path / "arm"
    out_dir.mkdir()
    (out_dir / "arm.json").write_text(arm.to_json())
    monkeypatch.setattr(launch, "ENTRY_POINT", "tests.rank_failure")
    env = launch.arm_environment({"HARNESS_THREADS": "1", "FAIL_RANK": str(failing_rank)})
    code = launch.run_arm_process(out_dir / "arm.json", out_dir, env=env, on_event=lambda e: None, devices=2)
    assert code != 0  # torchrun reports the failed rank
    pids = [int(p.read_text()) for p in sorted(out_dir.glob("rank-*.pid"))]
    assert len(pids) == 2
    ranks = []
    for pid in pids:
        try:
            ranks.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    assert _gone(ranks, timeout=30) == []
    if failing_rank == 0:  # rank 0 records why, then exits non-zero so torchrun stops rank 1
        result = json.loads((out_dir / "result.json").read_text())
        assert result["status"] == "failed" and f"injected failure on rank {failing_rank}" in result["error"]
    else:  # rank 1 writes nothing; rank 0, cut off mid-collective, may record `failed` (gloo's error)
        # before torchrun stops it; else the runner records `failed` from the exit status and log
        result = out_dir / "result.json"
        assert not result.exists() or json.loads(result.read_text())["status"] == "failed"
        assert "injected failure on rank 1" in (out_dir / "log.txt").read_text()


def test_a_ddp_arm_frees_its_wrapper_before_its_process_group_ends(tmp_path, tiny_models):
    """The DDP wrapper holds the process group's last reference: freed after destroy_process_group,
    the group's destructor joins a gloo thread that waits for the GIL, and rank 0 hangs now and then.
    Each rank counts the live DDP objects when the loop ends the group: none."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    script = [*command, "-m", "tests.ddp_release", str(tmp_path), str(tiny_models["llama"])]
    done = subprocess.run(script, cwd=root, env=env, capture_output=True)
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert record == {"world_size": 2, "strategy": "ddp", "alive_at_destroy": [0]}, record
